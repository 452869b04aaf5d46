"""snapshot: ledger tables copied from PostgreSQL into DuckDB equal the same rows written to DuckDB
(types, NULL vs "", JSON, lists, timestamps), and every table comes from one snapshot."""

from __future__ import annotations

import json
import threading

import duckdb
import pytest

from pipelines.schema import LEDGER_TABLES, create_tables
from pipelines.store.postgres import PostgresDatabase
from pipelines.store.snapshot import snapshot
from pipelines.store.store import Store
from tests.servers import migrated_pg_database
from tests.store.ledger_rows import ledger_rows, write_rows

JSON_COLUMNS = {"email_events": ["detail"]}


@pytest.fixture(scope="module")
def rows():
    return ledger_rows(seed=11, messages=300)


@pytest.fixture(scope="module")
def pg(rows):
    with migrated_pg_database() as url, PostgresDatabase(url) as db:
        write_rows(Store(db.connect), rows)
        yield db


def dump(conn, table: str) -> list[tuple]:
    cols = [c for (c,) in conn.execute(f"SELECT column_name FROM (DESCRIBE {table})").fetchall()]
    out = conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY 1").fetchall()
    # jsonb normalises the text (key order, spaces): compare JSON by value.
    js = [cols.index(c) for c in JSON_COLUMNS.get(table, [])]
    return [tuple(json.loads(v) if i in js and v is not None else v for i, v in enumerate(r)) for r in out]


def test_every_table_copies_exactly(pg, rows):
    expected = duckdb.connect()
    create_tables(expected, list(rows))
    write_rows(Store.over(expected), rows)
    got = duckdb.connect()
    create_tables(got, list(LEDGER_TABLES))
    stats = snapshot(pg, got, LEDGER_TABLES)
    assert stats.total_rows == sum(t.num_rows for t in rows.values())
    for table in rows:
        assert dump(got, table) == dump(expected, table), table
        assert stats.rows[table] == rows[table].num_rows
    # The awkward values are there to be told apart.
    assert got.execute("SELECT count(*) FILTER (WHERE sqs_message_id = ''), count(*) FILTER (WHERE sqs_message_id IS NULL)"
                       " FROM quarantine").fetchone() == (4, 4)
    assert got.execute("SELECT cursor_event_ids FROM billing_reconcile_runs ORDER BY run_id").fetchall() == [
        ([],), (None,), (["evt_1"],), (["", "a,b", 'q"uote', "{x}", "naïve", "NULL", None],)]


def test_the_tables_are_one_snapshot_while_a_writer_commits(pg):
    # The writer adds one quarantine row and one organisation per transaction; a snapshot sees as
    # many of each. (Read committed, per statement, would see the writer between the two tables.)
    stop = threading.Event()

    def writer():
        with pg.connect() as conn:
            i = 0
            while not stop.is_set():
                conn.execute("BEGIN")
                conn.execute("INSERT INTO quarantine (quarantine_id, source, raw_body, reason) VALUES (?, 'x', 'b', 'r')",
                             [f"w-{i}"])
                conn.execute("INSERT INTO organizations (id, name, type, created) VALUES (?, 'n', 'company', now())",
                             [f"w-{i}"])
                conn.execute("COMMIT")
                i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    counts = set()
    try:
        for _ in range(15):
            conn = duckdb.connect()
            create_tables(conn, ["quarantine", "organizations"])
            snapshot(pg, conn, ["quarantine", "organizations"])
            q, o = conn.execute("SELECT (SELECT count(*) FROM quarantine WHERE quarantine_id LIKE 'w-%'), "
                                "(SELECT count(*) FROM organizations WHERE id LIKE 'w-%')").fetchone()
            assert q == o
            counts.add(q)
    finally:
        stop.set()
        thread.join()
    assert len(counts) > 3, "the writer did not commit between snapshots: the test proved nothing"


def test_a_table_missing_in_duckdb_is_named(pg):
    with pytest.raises(LookupError, match="email_messages"):
        snapshot(pg, duckdb.connect(), ["email_messages"])
