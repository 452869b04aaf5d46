"""The store's contract, on both engines: the DuckDB file and PostgreSQL, each chosen the way the
code location chooses it (MAILROOM_STORE through pipelines.schema.configured_store).

PostgreSQL is the local server at 127.0.0.1:5432 (tests/servers.py): the module makes its own
database, applies the migrations and drops it at the end. Unreachable: the postgres cases skip,
or fail when CI=true.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import random
import re
import uuid
from dataclasses import dataclass

import psycopg
import pytest

from pipelines.schema import configured_store
from pipelines.store import migrate
from pipelines.store.store import Store
from pipelines.store.write import BIGINT, BOOL, FLOAT, INT, STR, TS, arrow, insert, with_rows, with_values
from tests.servers import fresh_pg_database

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


@dataclass
class Engine:
    name: str
    store: Store
    env: dict[str, str]


@pytest.fixture(scope="module")
def pg_database():
    with fresh_pg_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate.migrate(conn)
        yield url


@pytest.fixture(params=["duckdb", "postgres"])
def engine(request, tmp_path):
    if request.param == "duckdb":
        env = {"MAILROOM_STORE": "duckdb", "DUCKDB_PATH": str(tmp_path / "store.duckdb")}
    else:
        env = {"MAILROOM_STORE": "postgres", "DATABASE_URL": request.getfixturevalue("pg_database")}
    with configured_store(env) as store:
        yield Engine(request.param, store, env)


@pytest.fixture
def items(engine):
    """A scratch table of this test's own: (id PRIMARY KEY, n, note)."""
    name = f"items_{uuid.uuid4().hex[:10]}"
    with engine.store.transaction() as conn:
        conn.execute(f"CREATE TABLE {name} (id VARCHAR PRIMARY KEY, n BIGINT NOT NULL, note VARCHAR)")
    yield name
    with engine.store.transaction() as conn:
        conn.execute(f"DROP TABLE {name}")


def rows_of(engine, sql, params=None):
    with engine.store.read() as conn:
        return [tuple(r) for r in conn.execute(sql, params or []).fetchall()]


def batch(*pairs):
    return arrow(id=(STR, [p[0] for p in pairs]), n=(BIGINT, [p[1] for p in pairs]))


# ---- transactions ------------------------------------------------------------------------------

def test_a_transaction_commits_everything_inside_it(engine, items):
    with engine.store.transaction() as conn:
        conn.execute(f"INSERT INTO {items} (id, n) VALUES (?, ?)", ["a", 1])
        conn.execute(f"INSERT INTO {items} (id, n) VALUES (?, ?)", ["b", 2])
    assert rows_of(engine, f"SELECT id, n FROM {items} ORDER BY id") == [("a", 1), ("b", 2)]


def test_an_exception_rolls_back_everything_and_is_raised(engine, items):
    with pytest.raises(RuntimeError, match="halfway"):
        with engine.store.transaction() as conn:
            conn.execute(f"INSERT INTO {items} (id, n) VALUES (?, ?)", ["a", 1])
            raise RuntimeError("halfway")
    assert rows_of(engine, f"SELECT count(*) FROM {items}") == [(0,)]
    with engine.store.transaction() as conn:   # the store is usable afterwards
        conn.execute(f"INSERT INTO {items} (id, n) VALUES (?, ?)", ["a", 1])
    assert rows_of(engine, f"SELECT id FROM {items}") == [("a",)]


def test_a_failed_statement_rolls_back_the_transaction(engine, items):
    with pytest.raises(Exception, match=r"(?i)duplicate|constraint"):
        with engine.store.transaction() as conn:
            conn.execute(f"INSERT INTO {items} (id, n) VALUES (?, ?)", ["a", 1])
            conn.execute(f"INSERT INTO {items} (id, n) VALUES (?, ?)", ["a", 2])
    assert rows_of(engine, f"SELECT count(*) FROM {items}") == [(0,)]


def test_a_read_refuses_writes(engine, items):
    with pytest.raises(Exception, match=r"(?i)read.only"):
        with engine.store.read() as conn:
            conn.execute(f"INSERT INTO {items} (id, n) VALUES (?, ?)", ["a", 1])
    assert rows_of(engine, f"SELECT count(*) FROM {items}") == [(0,)]


def test_a_read_sees_one_snapshot(engine, items):
    other = configured_store(engine.env)
    with engine.store.read() as conn:
        before = conn.execute(f"SELECT count(*) FROM {items}").fetchone()[0]
        with other.transaction() as writer:
            writer.execute(f"INSERT INTO {items} (id, n) VALUES (?, ?)", ["late", 1])
        after = conn.execute(f"SELECT count(*) FROM {items}").fetchone()[0]
    other.__exit__(None, None, None)
    assert before == after == 0
    assert rows_of(engine, f"SELECT id FROM {items}") == [("late",)]


def test_question_mark_placeholders_and_percent_signs(engine, items):
    with engine.store.transaction() as conn:
        conn.execute(f"INSERT INTO {items} (id, n, note) VALUES (?, ?, '100% sure?')", ["a", 1])
    assert rows_of(engine, f"SELECT note FROM {items} WHERE id = ? AND note LIKE '%sure%'", ["a"]) == [("100% sure?",)]


# ---- set-wise writes -----------------------------------------------------------------------------

def test_insert_returns_the_rows_inserted_and_skips_conflicts(engine, items):
    with engine.store.transaction() as conn:
        assert insert(conn, items, batch(("a", 1), ("b", 2), ("c", 3))) == 3
    with engine.store.transaction() as conn:
        assert insert(conn, items, batch(("b", 20), ("c", 30), ("d", 4)), on_conflict="DO NOTHING") == 1
    assert rows_of(engine, f"SELECT id, n FROM {items} ORDER BY id") == [("a", 1), ("b", 2), ("c", 3), ("d", 4)]


def test_insert_with_where_and_chosen_columns(engine, items):
    with engine.store.transaction() as conn:
        assert insert(conn, items, batch(("a", 1), ("b", -2)), where="n > 0", columns=["id", "n"]) == 1
        assert insert(conn, items, arrow(id=(STR, [])), ) == 0
    assert rows_of(engine, f"SELECT id FROM {items}") == [("a",)]


def test_upsert_on_conflict_do_update(engine, items):
    with engine.store.transaction() as conn:
        insert(conn, items, batch(("a", 1), ("b", 2)))
    with engine.store.transaction() as conn:
        insert(conn, items, batch(("b", 5), ("c", 3)),
               on_conflict="(id) DO UPDATE SET n = excluded.n + 100")
    assert rows_of(engine, f"SELECT id, n FROM {items} ORDER BY id") == [("a", 1), ("b", 105), ("c", 3)]


def test_reapplying_a_batch_changes_nothing(engine, items):
    rows = batch(*((f"k{i}", i) for i in range(500)))
    with engine.store.transaction() as conn:
        assert insert(conn, items, rows, on_conflict="DO NOTHING") == 500
    first = rows_of(engine, f"SELECT id, n, note FROM {items} ORDER BY id")
    with engine.store.transaction() as conn:
        assert insert(conn, items, rows, on_conflict="DO NOTHING") == 0
    assert rows_of(engine, f"SELECT id, n, note FROM {items} ORDER BY id") == first


def test_with_rows_reads_every_column_type_back(engine):
    rows = arrow(s=(STR, ["a", "", None, 'q"uo,te\nline', "50%"]), b=(BOOL, [True, False, None, True, False]),
                 i=(INT, [1, -2, None, 2**31 - 1, 0]), big=(BIGINT, [2**62, None, 0, -1, 7]),
                 f=(FLOAT, [1.5, None, 0.1, -2.25e-300, 3.0]), ts=(TS, [T0, None, T0, T0, None]))
    with engine.store.transaction() as conn:
        got = with_rows(conn, "SELECT s, b, i, big, f, ts FROM rows WHERE big IS DISTINCT FROM ? ORDER BY i NULLS LAST",
                        rows, [7]).fetchall()
    assert [tuple(r) for r in got] == [
        ("", False, -2, None, None, None), ("a", True, 1, 2**62, 1.5, T0),
        ('q"uo,te\nline', True, 2**31 - 1, -1, -2.25e-300, T0), (None, None, None, 0, 0.1, T0)]


def test_with_rows_list_columns(engine):
    import pyarrow as pa

    rows = arrow(id=(STR, ["a", "b"]), tags=pa.array([["x", "y,z"], None], type=pa.list_(pa.string())))
    with engine.store.transaction() as conn:
        got = with_rows(conn, "SELECT id, tags FROM rows ORDER BY id", rows).fetchall()
    assert [tuple(r) for r in got] == [("a", ["x", "y,z"]), ("b", None)]


def test_two_batches_in_one_transaction(engine, items):
    with engine.store.transaction() as conn:
        insert(conn, items, batch(("a", 1)))
        insert(conn, items, arrow(id=(STR, ["b"]), n=(BIGINT, [2]), note=(STR, ["second"])))
        total = with_rows(conn, f"SELECT count(*) FROM {items} JOIN rows USING (id)", batch(("a", 0), ("b", 0)))
        assert total.fetchone()[0] == 2
    assert rows_of(engine, f"SELECT id, note FROM {items} ORDER BY id") == [("a", None), ("b", "second")]


def test_the_same_layout_twice_in_one_transaction_and_after_a_rollback(engine, items):
    """On PostgreSQL a layout's temporary table is kept for the session: a second fill in the same
    transaction sees only its own rows, and a rollback that dropped the table does not break the next."""
    with engine.store.transaction() as conn:
        assert with_rows(conn, "SELECT count(*) FROM rows", batch(("a", 1), ("b", 2))).fetchone()[0] == 2
        assert with_rows(conn, "SELECT id FROM rows", batch(("c", 3))).fetchall() == [("c",)]
    with pytest.raises(RuntimeError):
        with engine.store.transaction() as conn:
            with_rows(conn, "SELECT count(*) FROM rows", arrow(only_here=(STR, ["x"]))).fetchone()
            raise RuntimeError("rolled back")
    with engine.store.transaction() as conn:
        assert with_rows(conn, "SELECT only_here FROM rows", arrow(only_here=(STR, ["y"]))).fetchall() == [("y",)]
        assert with_rows(conn, "SELECT count(*) FROM rows", batch(("d", 4))).fetchone()[0] == 1


def test_with_values_is_a_relation_of_keys(engine, items):
    with engine.store.transaction() as conn:
        insert(conn, items, batch(("a", 1), ("b", 2), ("c", 3)))
        got = with_values(conn, f"SELECT id FROM rows WHERE id IN (SELECT id FROM {items} WHERE n >= ?) ORDER BY id",
                          "id", ["a", "b", "z", "50%"], [2]).fetchall()
        assert [tuple(r) for r in got] == [("b",)]
        assert with_values(conn, f"SELECT count(*) FROM {items} WHERE id IN (SELECT id FROM rows)", "id",
                           []).fetchone()[0] == 0


# ---- the race-free claim -------------------------------------------------------------------------

# The outbox's claim: one row per (request_id, recipient); whoever inserts it owns the send. Keys
# are taken in key order, so two transactions claiming overlapping batches lock rows in the same
# order and cannot deadlock.
CLAIM = """
    INSERT INTO email_messages (request_id, to_address, kind, status)
    SELECT request_id, to_address, 'password-reset', 'pending' FROM rows ORDER BY request_id, to_address
    ON CONFLICT DO NOTHING
    RETURNING request_id, to_address
"""


def _claimer(env, keys, chunk, barrier, results):
    with configured_store(env) as store:
        won = []
        for start in range(0, len(keys), chunk):
            # Both claimers take each round's batch together, so they really overlap even when the
            # machine is busy (without the barrier one may finish before the other has started).
            barrier.wait()
            part = keys[start:start + chunk]
            rows = arrow(request_id=(STR, [k[0] for k in part]), to_address=(STR, [k[1] for k in part]))
            with store.transaction() as conn:
                won += [tuple(r) for r in with_rows(conn, CLAIM, rows).fetchall()]
        results.put(won)


def test_two_processes_claim_each_recipient_exactly_once(engine):
    run = uuid.uuid4().hex[:8]
    keys = [(f"req-{run}-{i // 3}", f"user{i % 3}@example.com") for i in range(300)]
    mine, theirs = list(keys), list(keys)
    random.Random(1).shuffle(theirs)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(engine.env, ks, chunk, barrier, results))
             for ks, chunk in ((mine, 30), (theirs, 30))]
    for p in procs:
        p.start()
    won = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    a, b = set(won[0]), set(won[1])
    assert len(won[0]) == len(a) and len(won[1]) == len(b)
    assert not a & b, "a recipient was claimed twice"
    assert a | b == set(keys)
    if engine.name == "postgres":   # both really ran at once, not one after the other
        assert a and b, f"one claimer won everything ({len(a)}/{len(b)})"
    assert rows_of(engine, "SELECT count(*) FROM email_messages WHERE request_id LIKE ?", [f"req-{run}-%"]) == [(300,)]


def test_the_settings_name_the_engine(engine):
    with engine.store.transaction() as conn:
        kind = type(conn).__module__
    assert re.match({"duckdb": r"(_)?duckdb", "postgres": r"pipelines\.store\.postgres"}[engine.name], kind)


def test_lock_keys_makes_transactions_on_a_key_take_turns(engine):
    import threading
    import time

    from pipelines.store.locks import lock_keys

    if engine.name == "duckdb":   # one writing process at a time already: nothing to lock
        with engine.store.transaction() as conn:
            assert lock_keys(conn, "test", ["a", "a", "b"]) == 0
        return
    other, third = configured_store(engine.env), configured_store(engine.env)   # a Store is one thread's
    events = []

    def second():
        with other.transaction() as conn:
            lock_keys(conn, "test", ["b", "c"])
            events.append(("second locked", time.monotonic()))

    with engine.store.transaction() as conn:
        assert lock_keys(conn, "test", ["c", "a", "a"]) == 2
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.5)
        assert events == [], "the second transaction took a key the first holds"
        with third.transaction() as free:   # another key, or another namespace, is not held
            lock_keys(free, "test", ["d"])
            lock_keys(free, "other", ["a"])
        events.append(("first commits", time.monotonic()))
    t.join(10)
    other.__exit__(None, None, None)
    third.__exit__(None, None, None)
    assert [e for e, _ in events] == ["first commits", "second locked"]
