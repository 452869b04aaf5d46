"""The dialect layer (pipelines/store/dialect.py) and the engine settings (MAILROOM_STORE, DATABASE_URL)."""

from __future__ import annotations

import duckdb
import psycopg
import pytest

from devstack.env import documented_defaults
from pipelines.schema import configured_store, engine
from pipelines.settings import SettingsError, validate
from pipelines.store.dialect import DUCKDB, POSTGRES, column_types, dialect_of, pyformat
from pipelines.store.postgres import PostgresConnection, pg_type
from tests.servers import fresh_pg_database


@pytest.mark.parametrize("sql,expected", [
    ("SELECT ?", "SELECT %s"),
    ("a = ? AND b = ?", "a = %s AND b = %s"),
    ("SELECT '?', ?", "SELECT '?', %s"),
    ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', %s"),
    ('SELECT "odd?col" FROM t WHERE x = ?', 'SELECT "odd?col" FROM t WHERE x = %s'),
    ("x LIKE '50%' AND y = ?", "x LIKE '50%%' AND y = %s"),
    ("SELECT 7 % 2", "SELECT 7 %% 2"),
    ("SELECT 1 -- why? 100%\n, ?", "SELECT 1 -- why? 100%%\n, %s"),
])
def test_pyformat(sql, expected):
    assert pyformat(sql) == expected


@pytest.fixture(scope="module")
def pg():
    with fresh_pg_database() as url, psycopg.connect(url, autocommit=True) as raw:
        yield PostgresConnection(raw)


@pytest.fixture(params=["duckdb", "postgres"])
def conn(request):
    if request.param == "duckdb":
        c = duckdb.connect()
        yield c
        c.close()
    else:
        yield request.getfixturevalue("pg")


EVENTS = """(VALUES ('m1', 'Send', TIMESTAMPTZ '2026-01-01 00:00:00+00'),
                     ('m1', 'Delivery', TIMESTAMPTZ '2026-01-01 00:00:05+00'),
                     ('m1', 'Open', NULL),
                     ('m2', 'Bounce', TIMESTAMPTZ '2026-01-02 00:00:00+00')) AS e(message_id, event_type, occurred_at)"""


def test_arg_max_and_any_value_mean_the_same_on_both(conn):
    d = dialect_of(conn)
    got = conn.execute(f"SELECT message_id, {d.arg_max('event_type', 'occurred_at')}, "
                       f"{d.any_value('message_id')} FROM {EVENTS} GROUP BY message_id ORDER BY 1").fetchall()
    assert [tuple(r) for r in got] == [("m1", "Delivery", "m1"), ("m2", "Bounce", "m2")]


def test_epoch_means_the_same_on_both(conn):
    d = dialect_of(conn)
    got = conn.execute(f"SELECT {d.epoch('t')}, {d.epoch('n')} FROM (VALUES "
                       "(TIMESTAMPTZ '2026-09-01 12:00:07.9+00', CAST(NULL AS TIMESTAMPTZ))) AS v(t, n)").fetchone()
    assert tuple(got) == (1788264008, None)   # rounded to whole seconds by both (Stripe's `created` has no fraction)
    assert isinstance(got[0], int)


def test_text_into_a_json_column_and_column_types_on_both(conn):
    d = dialect_of(conn)
    conn.execute("DROP TABLE IF EXISTS dialect_json")
    conn.execute("CREATE TABLE dialect_json (id VARCHAR PRIMARY KEY, n BIGINT, seen TIMESTAMPTZ, doc JSON, ok BOOLEAN)")
    types = column_types(conn, "dialect_json")
    assert list(types) == ["id", "n", "seen", "doc", "ok"]
    assert types["n"] == "BIGINT" and types["seen"] == "TIMESTAMP WITH TIME ZONE" and types["ok"] == "BOOLEAN"
    assert types["doc"] == "JSON"
    assert d.from_text("doc", types["doc"]) == ("doc" if d is DUCKDB else "doc::json")
    assert d.from_text("id", types["id"]) == "id"
    conn.execute(f"INSERT INTO dialect_json (id, doc) SELECT id, {d.from_text('doc', types['doc'])} "
                 "FROM (VALUES ('a', '{\"k\": [1, 2]}')) AS v(id, doc)")
    assert conn.execute("SELECT doc->>'k' FROM dialect_json").fetchone()[0].replace(" ", "") == "[1,2]"
    conn.execute("DROP TABLE dialect_json")
    with pytest.raises((LookupError, duckdb.CatalogException)):
        column_types(conn, "no_such_table")


def test_dialect_of():
    assert dialect_of(duckdb.connect()) is DUCKDB
    assert PostgresConnection.dialect is POSTGRES
    assert DUCKDB.begin(read_only=False) == "BEGIN TRANSACTION"          # DuckDB's path is unchanged
    assert DUCKDB.begin(read_only=True) == "BEGIN TRANSACTION READ ONLY"
    assert "REPEATABLE READ READ ONLY" in POSTGRES.begin(read_only=True)


def test_an_arrow_type_without_a_postgres_type_is_named():
    import pyarrow as pa

    assert pg_type(pa.timestamp("us", tz="UTC")) == "timestamptz"
    assert pg_type(pa.list_(pa.string())) == "text[]"
    with pytest.raises(TypeError, match="no PostgreSQL type for the Arrow type binary"):
        pg_type(pa.binary())


# ---- settings ----------------------------------------------------------------------------------

GOOD = documented_defaults()   # what `make dev` sets: MAILROOM_STORE=duckdb, DATABASE_URL empty

def test_the_engine_setting():
    validate(GOOD)
    assert (GOOD["MAILROOM_STORE"], GOOD["DATABASE_URL"]) == ("duckdb", "")
    assert engine({}) == "duckdb"
    assert engine({"MAILROOM_STORE": "postgres"}) == "postgres"
    with pytest.raises(SettingsError, match="MAILROOM_STORE must be one of duckdb, postgres"):
        engine({"MAILROOM_STORE": "sqlite"})


def test_postgres_needs_a_database_url():
    with pytest.raises(SettingsError, match="DATABASE_URL must be set when MAILROOM_STORE=postgres"):
        validate({**GOOD, "MAILROOM_STORE": "postgres", "DATABASE_URL": ""})
    with pytest.raises(SettingsError, match="DATABASE_URL must be set"):
        configured_store({"MAILROOM_STORE": "postgres"})
    validate({**GOOD, "MAILROOM_STORE": "postgres", "DATABASE_URL": "postgresql://m@db/mailroom"})


def test_a_malformed_database_url_is_named_but_not_echoed():
    with pytest.raises(SettingsError) as err:
        validate({**GOOD, "MAILROOM_STORE": "postgres", "DATABASE_URL": "mysql://u:hunter2@db/x"})
    assert "DATABASE_URL must be empty or a postgresql:// URL" in str(err.value)
    assert "hunter2" not in str(err.value)
    with pytest.raises(SettingsError, match="MAILROOM_STORE must be one of duckdb, postgres"):
        validate({**GOOD, "MAILROOM_STORE": "pg"})


def test_the_duckdb_store_is_the_default(tmp_path):
    with configured_store({"DUCKDB_PATH": str(tmp_path / "x.duckdb")}) as store:
        with store.transaction() as c:
            assert isinstance(c, duckdb.DuckDBPyConnection)
            assert c.execute("SELECT count(*) FROM email_messages").fetchone() == (0,)
