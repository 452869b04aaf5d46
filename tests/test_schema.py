"""Every table the README lists exists, empty, from the first connection; assets fill tables and
never create them; the schema is code, not the DuckDB resource's config."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from pipelines.query import run
from pipelines.schema import ALL_DDL, create, database

ROOT = Path(__file__).resolve().parents[1]


def readme_tables() -> set[str]:
    """Names in the first column of every table under the README's "## Tables" heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Tables", 1)[1].split("\n## ", 1)[0]
    names = {m.group(1) for m in re.finditer(r"^\| (?:view )?`([a-z_]+)` \|", section, re.M)}
    assert len(names) > 20, names
    return names


def declared_tables() -> set[str]:
    conn = duckdb.connect()
    for ddl in ALL_DDL:
        conn.execute(ddl)
    return {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def columns(path: str) -> list[tuple]:
    with duckdb.connect(path, read_only=True) as conn:
        return conn.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                            "ORDER BY table_name, ordinal_position").fetchall()


def test_readme_lists_exactly_the_declared_tables():
    assert readme_tables() == declared_tables()


def test_every_readme_table_exists_empty_before_any_asset_ran(tmp_path):
    path = str(tmp_path / "fresh.duckdb")
    # What `make dev` runs before Dagster starts (devstack/dev.py), in its own process.
    done = subprocess.run([sys.executable, "-m", "pipelines.schema", "--db", path], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with duckdb.connect(path) as conn:   # an ad-hoc reader, plain DuckDB
        for table in sorted(readme_tables()):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
    for table in ("subscriptions_current", "billing_daily", "billing_leaks", "email_sends_daily"):
        assert run(f"SELECT count(*) AS n FROM {table}", path).split() == ["n", "0"]   # python -m pipelines.query


def test_the_resource_creates_every_table_on_its_first_connection(tmp_path):
    with database(str(tmp_path / "first.duckdb")).connect(read_only=False) as conn:
        tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert readme_tables() <= tables


def test_report_assets_fill_their_tables_without_recreating_them(tmp_path):
    from pipelines.billing import reporting
    from pipelines.email import sends_daily
    from pipelines.email_delivery.reporting import refresh_delivery_daily
    from pipelines.store.store import Store

    path = str(tmp_path / "reports.duckdb")
    create(path)
    before = columns(path)
    now = datetime.now(UTC)
    with Store(database(path).connect) as store, store.transaction() as conn:
        conn.execute("INSERT INTO organizations (id, name, type, created) VALUES ('o1', 'Org', 'company', ?)",
                     [now])
        reporting.refresh_subscriptions_current(conn, now)
        reporting.refresh_billing_daily(conn, now)
        reporting.refresh_billing_leaks(conn, now)
        sends_daily.materialize(conn)
        refresh_delivery_daily(conn)
    assert columns(path) == before
    assert run("SELECT organization_id FROM subscriptions_current", path).split() == ["organization_id", "o1"]


def test_no_module_creates_a_table_outside_the_schema():
    creates = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?TABLE\b", re.I)
    found = [str(p.relative_to(ROOT)) for p in (ROOT / "pipelines").rglob("*.py")
             if p.name != "tables.py" and creates.search(p.read_text())]
    assert found == []


def test_the_schema_is_not_in_the_resources_config():
    """What the launchpad shows for the store resource: where the ledgers are, no DDL; its DuckDB
    file is made with the code location's schema."""
    from pipelines.definitions import defs

    shown = defs.get_repository_def().get_top_level_resources()["store"].config_schema
    assert set(shown.config_type.fields) == {"engine", "duckdb_path", "database_url", "asset_store_url", "region", "pool_size"}
    assert shown.default_value == {"engine": {"env": "MAILROOM_STORE"}, "duckdb_path": {"env": "DUCKDB_PATH"},
                                   "database_url": {"env": "DATABASE_URL"},
                                   "asset_store_url": {"env": "ASSET_STORE_URL"}, "region": {"env": "AWS_REGION"}}
    assert list(database("unused.duckdb").schema()) == list(ALL_DDL)


def test_the_schema_runs_again_unchanged(tmp_path):
    path = str(tmp_path / "again.duckdb")
    create(path)
    before = columns(path)
    with duckdb.connect(path) as conn:
        for ddl in ALL_DDL:
            conn.execute(ddl)
    assert columns(path) == before
