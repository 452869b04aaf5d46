"""report_workspace: each report function gives in the PostgreSQL profile (ledgers in PostgreSQL, an
in-memory DuckDB, the report published to the asset store on moto's S3) exactly what it gives on
the DuckDB file for the same ledger rows."""

from __future__ import annotations

import datetime as dt
import uuid

import duckdb
import pytest

from pipelines.billing import reporting as billing
from pipelines.email import sends_daily
from pipelines.email_delivery import reporting as delivery
from pipelines.report_workspace import WorkspaceLog, report_workspace
from pipelines.schema import database
from pipelines.store.asset_store import AssetConflict, AssetStore
from pipelines.store.postgres import PostgresDatabase
from pipelines.store.store import Store
from tests.servers import migrated_pg_database
from tests.store.ledger_rows import NOW, ledger_rows, write_rows

EMAIL = ["email_messages", "email_events"]
SUBS = ["organizations", "stripe_subscriptions", "stripe_subscription_items"]
MONEY = ["stripe_subscriptions", "stripe_payments", "stripe_subscription_items", "stripe_prices"]

# name: (reads, the report table, the function)
REPORTS = {
    "sends_daily": (["email_messages"], "email_sends_daily", sends_daily.materialize),
    "delivery_daily": (EMAIL, "email_delivery_daily", delivery.refresh_delivery_daily),
    "reputation": (EMAIL, "ses_reputation", lambda c: delivery.compute_reputation(c, NOW)),
    "subscriptions_current": (SUBS, "subscriptions_current", lambda c: billing.refresh_subscriptions_current(c, NOW)),
    "billing_daily": (MONEY, "billing_daily", lambda c: billing.refresh_billing_daily(c, NOW)),
    "billing_leaks": (["stripe_subscriptions", "organizations"], "billing_leaks",
                      lambda c: billing.refresh_billing_leaks(c, NOW)),
}
VOLATILE = {"billing_leaks": "detected_at"}   # now() at the refresh


@pytest.fixture(scope="module")
def rows():
    return ledger_rows()


@pytest.fixture(scope="module")
def pg(rows):
    with migrated_pg_database() as url, PostgresDatabase(url) as db:
        write_rows(Store(db.connect), rows)
        yield db


@pytest.fixture
def duck(rows, tmp_path):
    db = database(str(tmp_path / "ledgers.duckdb"))
    write_rows(Store(db.connect), rows)
    return db


@pytest.fixture
def assets(local_stack):
    """A fresh prefix of the dev stack's bucket (the topology creates mailroom-assets)."""
    return AssetStore.from_url(f"s3://mailroom-assets/test-{uuid.uuid4().hex[:8]}", s3_client=local_stack.client("s3"))


def contents(conn, table: str) -> list[tuple]:
    cols = [c for (c,) in conn.execute(f"SELECT column_name FROM (DESCRIBE {table})").fetchall()
            if c != VOLATILE.get(table)]
    return conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY ALL").fetchall()


def published(assets: AssetStore, table: str) -> list[tuple]:
    data, _ = assets.read(table)
    with duckdb.connect() as conn:
        conn.register(table, data)
        return contents(conn, table)


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_each_report_is_the_same_on_both_profiles(name, duck, pg, assets):
    reads, table, fn = REPORTS[name]
    with report_workspace(duck, None, reads=reads, writes=[table]) as conn:
        on_duckdb = fn(conn)
    with Store(duck.connect).read() as conn:
        expected = contents(conn, table)
    assert expected, f"{table} is empty: the rows exercise nothing"

    log = WorkspaceLog()
    with report_workspace(pg, assets, reads=reads, writes=[table], log=log) as conn:
        on_postgres = fn(conn)
    assert on_postgres == on_duckdb
    assert published(assets, table) == expected
    assert log.published[table].rows == len(expected)
    assert set(log.snapshot.rows) == set(reads) and all(log.snapshot.rows.values())


def test_reputation_keeps_its_history_across_workspaces(duck, pg, assets):
    for hours in (0, 1, 2):
        now = NOW + dt.timedelta(hours=hours)
        with report_workspace(duck, None, reads=EMAIL, writes=["ses_reputation"]) as conn:
            a = delivery.compute_reputation(conn, now)
        with report_workspace(pg, assets, reads=EMAIL, writes=["ses_reputation"]) as conn:
            b = delivery.compute_reputation(conn, now)
        assert a == b
    with Store(duck.connect).read() as conn:
        expected = contents(conn, "ses_reputation")
    assert len(expected) == 3
    assert published(assets, "ses_reputation") == expected


def test_a_failed_function_publishes_nothing(pg, assets):
    with pytest.raises(RuntimeError, match="boom"):
        with report_workspace(pg, assets, reads=["email_messages"], writes=["email_sends_daily"]) as conn:
            sends_daily.materialize(conn)
            raise RuntimeError("boom")
    assert assets.read("email_sends_daily")[1].version is None


def test_a_table_not_named_is_absent_and_a_read_workspace_refuses_writes(pg, assets):
    with pytest.raises(duckdb.CatalogException, match="email_events"):
        with report_workspace(pg, assets, reads=["email_messages"], writes=["email_delivery_daily"]) as conn:
            delivery.refresh_delivery_daily(conn)
    with pytest.raises(duckdb.Error, match="read-only"):
        with report_workspace(pg, assets, reads=["email_messages"]) as conn:
            conn.execute("DELETE FROM email_messages")
    with pytest.raises(ValueError, match="report tables"):
        with report_workspace(pg, assets, reads=[], writes=["email_messages"]):
            pass


def test_a_concurrent_publisher_makes_the_later_one_conflict_instead_of_losing_a_row(pg, assets):
    with report_workspace(pg, assets, reads=EMAIL, writes=["ses_reputation"]) as conn:
        delivery.compute_reputation(conn, NOW)
    with pytest.raises(AssetConflict):
        with report_workspace(pg, assets, reads=EMAIL, writes=["ses_reputation"]) as first:
            delivery.compute_reputation(first, NOW + dt.timedelta(hours=1))
            with report_workspace(pg, assets, reads=EMAIL, writes=["ses_reputation"]) as second:
                delivery.compute_reputation(second, NOW + dt.timedelta(hours=2))
    # The second publish stands, with the history it loaded; rerunning the first adds its row.
    with report_workspace(pg, assets, reads=EMAIL, writes=["ses_reputation"]) as conn:
        delivery.compute_reputation(conn, NOW + dt.timedelta(hours=1))
    data, _ = assets.read("ses_reputation")
    assert data.num_rows == 3


def test_the_duckdb_profile_is_the_file_itself(duck, tmp_path):
    with report_workspace(duck, None, reads=["email_messages"], writes=["email_sends_daily"]) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "ledgers"
        sends_daily.materialize(conn)
    with Store(duck.connect).read() as conn:
        assert conn.execute("SELECT count(*) FROM email_sends_daily").fetchone()[0] > 0
