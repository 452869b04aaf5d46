"""The PostgreSQL migrations and the DuckDB DDL describe the same ledgers: table by table, column by
column (name, order, type, nullability, default), the primary key, and each CHECK's value set.

A change to a domain's tables.py therefore fails here until a new migration makes the same change in
PostgreSQL (and the other way round). The one difference on purpose is listed in KEY_ONLY_IN_POSTGRES.
"""

from __future__ import annotations

import re

import duckdb
import psycopg
import pytest

from pipelines.schema import LEDGER_TABLES, ensure_schema
from pipelines.store import migrate
from tests.servers import fresh_pg_database

# DuckDB keeps email_events.event_id unique through its single writer; PostgreSQL has many writers.
KEY_ONLY_IN_POSTGRES = {"email_events": ("event_id",)}

TYPES = {"VARCHAR": "text", "BOOLEAN": "boolean", "BIGINT": "bigint", "INTEGER": "integer",
         "DOUBLE": "double precision", "TIMESTAMP WITH TIME ZONE": "timestamp with time zone", "JSON": "jsonb",
         "VARCHAR[]": "_text", "DATE": "date"}


def check_values(expression: str) -> tuple[str, frozenset[str], bool]:
    """(column, allowed values, NULL allowed) of `CHECK (col IN (...))` in either engine's spelling."""
    column = re.search(r"\(*\"?([a-z_]+)\"?\)?(?:::text)?\s*(?:IN|=\s*ANY)", expression).group(1)
    values = frozenset(v.replace("''", "'") for v in re.findall(r"'((?:[^']|'')*)'", expression))
    return column, values, "IS NULL" in expression


@pytest.fixture(scope="module")
def duck():
    conn = duckdb.connect()
    ensure_schema(conn)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def pg():
    with fresh_pg_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate.migrate(conn)
            yield conn


def duckdb_table(conn, table):
    columns = [(name, TYPES[t], nullable, default) for name, t, nullable, default in conn.execute(
        "SELECT column_name, data_type, is_nullable, column_default FROM duckdb_columns() "
        "WHERE table_name = ? ORDER BY column_index", [table]).fetchall()]
    key = [cols for kind, _, cols in conn.execute(
        "SELECT constraint_type, expression, constraint_column_names FROM duckdb_constraints() "
        "WHERE table_name = ? AND constraint_type = 'PRIMARY KEY'", [table]).fetchall()]
    checks = {check_values(e) for (e,) in conn.execute(
        "SELECT expression FROM duckdb_constraints() WHERE table_name = ? AND constraint_type = 'CHECK'",
        [table]).fetchall()}
    return columns, tuple(key[0]) if key else (), checks


def postgres_table(conn, table):
    columns = []
    for name, t, udt, nullable, default in conn.execute(
            "SELECT column_name, data_type, udt_name, is_nullable = 'YES', column_default "
            "FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s "
            "ORDER BY ordinal_position", [table]):
        columns.append((name, udt if t == "ARRAY" else t, nullable, default))
    key = conn.execute(
        "SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_constraint c "
        "CROSS JOIN unnest(c.conkey) WITH ORDINALITY k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
        "WHERE c.conrelid = %s::regclass AND c.contype = 'p'", [table]).fetchone()[0]
    checks = {check_values(d) for (d,) in conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c'",
        [table])}
    return columns, tuple(key or ()), checks


def test_postgres_holds_exactly_the_ledger_tables(pg):
    tables = {t for (t,) in pg.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")}
    assert tables == set(LEDGER_TABLES) | {"schema_migrations"}


# Views over the ledgers that readers use on either engine (the reports' views stay DuckDB's).
LEDGER_VIEWS = ("email_status",)


def test_postgres_holds_exactly_the_ledger_views(duck, pg):
    views = {v for (v,) in pg.execute("SELECT table_name FROM information_schema.views WHERE table_schema = 'public'")}
    assert views == set(LEDGER_VIEWS)
    assert set(LEDGER_VIEWS) <= {v for (v,) in duck.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


@pytest.mark.parametrize("view", LEDGER_VIEWS)
def test_view_columns_agree_in_both_engines(duck, pg, view):
    d_columns = [(n, TYPES[t]) for n, t in duck.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [view]).fetchall()]
    p_columns = [(n, t) for n, t in pg.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name = %s ORDER BY ordinal_position", [view])]
    assert d_columns and d_columns == p_columns


def differences(duck, pg, table) -> list[str]:
    d_columns, d_key, d_checks = duckdb_table(duck, table)
    p_columns, p_key, p_checks = postgres_table(pg, table)
    if not d_columns:
        return [f"{table} is not in the DuckDB schema"]
    found = []
    d_types, p_types = [(n, t) for n, t, _, _ in d_columns], [(n, t) for n, t, _, _ in p_columns]
    if d_types != p_types:
        found.append(f"columns/types: duckdb {d_types} != postgres {p_types}")
    key = d_key or KEY_ONLY_IN_POSTGRES.get(table, ())
    if p_key != key:
        found.append(f"primary key: duckdb {key} != postgres {p_key}")
    d_required = {n for n, _, nullable, _ in d_columns if not nullable} | set(p_key)
    p_required = {n for n, _, nullable, _ in p_columns if not nullable}
    if d_required != p_required:
        found.append(f"NOT NULL: duckdb {sorted(d_required)} != postgres {sorted(p_required)}")
    d_defaults = {n: d.lower() for n, _, _, d in d_columns if d is not None}
    p_defaults = {n: d.lower() for n, _, _, d in p_columns if d is not None}
    if d_defaults != p_defaults:
        found.append(f"defaults: duckdb {d_defaults} != postgres {p_defaults}")
    if d_checks != p_checks:
        found.append(f"CHECKs: duckdb {d_checks} != postgres {p_checks}")
    return found


@pytest.mark.parametrize("table", LEDGER_TABLES)
def test_table_agrees_in_both_engines(duck, pg, table):
    assert differences(duck, pg, table) == []


def test_a_drifted_table_is_caught(pg):
    drifted = duckdb.connect()
    drifted.execute("""CREATE TABLE organizations (id VARCHAR PRIMARY KEY, name VARCHAR,
        type VARCHAR NOT NULL CHECK (type IN ('company')), created TIMESTAMPTZ NOT NULL,
        deleted_at TIMESTAMPTZ, billing_email VARCHAR, extra BIGINT)""")
    found = differences(drifted, pg, "organizations")
    assert [f.split(":")[0] for f in found] == ["columns/types", "NOT NULL", "CHECKs"]


def test_check_values_reads_both_spellings():
    assert check_values("(\"action\" IN ('inserted', 'it''s'))") == ("action", frozenset({"inserted", "it's"}), False)
    assert check_values("CHECK (((bounce_type IS NULL) OR (bounce_type = ANY (ARRAY['Permanent'::text, "
                        "'Transient'::text]))))") == ("bounce_type", frozenset({"Permanent", "Transient"}), True)
