"""The outbox ledger's tests (tests/email/test_email_ledger.py) on the PostgreSQL engine, unchanged: the
claim's skip rules, idempotent reruns, crash resends and the in-flight bound, through the real
email-requests consumer. That file runs them on DuckDB; here `db` is a migrated PostgreSQL database.
Then the repeat window and the exactly-once claim under two concurrent processes, on both engines."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import psycopg
import pytest

from pipelines.schema import database
from pipelines.store import migrate, postgres
from tests.fakes import RecordingTransport, write_sample_templates
from tests.servers import fresh_pg_database
from tests.email.test_email_ledger import (handler, msg,  # noqa: F401 - the ledger tests, collected here
                                     test_claim_applies_ledger_rules_in_order, test_inflight_is_at_most_two_windows,
                                     test_mark_only_touches_pending, test_pending_rows_from_a_crash_are_resent_once,
                                     test_same_batch_twice_sends_nothing_twice, test_window_counts_only_sends)


class PostgresDatabase:
    """What the ledger tests use of the DuckDB resource (`connect()`, `path`), on PostgreSQL."""

    def __init__(self, url: str):
        self.path = url
        self.pool = postgres.pool(url)
        self.connect = postgres.connector(self.pool)


def open_database(where: str):
    return PostgresDatabase(where) if where.startswith("postgresql://") else database(where)


@pytest.fixture
def pg_url():
    with fresh_pg_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate.migrate(conn)
        yield url


@pytest.fixture
def db(pg_url):
    d = PostgresDatabase(pg_url)
    yield d
    d.pool.close()


# ---- repeat window and claims under two concurrent processes, on both engines ---------------------

def _worker(where, templates, prefix, start, out):
    db = open_database(where)
    t = RecordingTransport()
    h = handler(db, Path(templates), t)
    batch = [msg(i, {"request_id": f"{prefix}-{i}", "kind": "two-factor-added",
                     "recipients": [{"email": f"same{i}@example.org", "verified": True}],
                     "context": {"method": "totp", "username": "u"}}) for i in range(40)]
    # Both take the recipients in the same order, so their claims meet on the same addresses at once.
    start.wait()
    for i in range(0, len(batch), 5):
        h.handle(batch[i:i + 5])
    # and each run's first batch again, as a redelivery: nothing more is sent
    h.handle(batch[:5])
    out.put((prefix, len(t.sent)))


@pytest.fixture(params=["duckdb", "postgres"])
def where(request, tmp_path):
    if request.param == "duckdb":
        path = str(tmp_path / "ledger.duckdb")
        with database(path).connect():
            pass
        return path
    return request.getfixturevalue("pg_url")


def test_repeat_window_and_claims_hold_under_two_concurrent_processes(where, tmp_path):
    templates = write_sample_templates(tmp_path / "t")
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(where, str(templates), p, start, out)) for p in ("A", "B")]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    sent = dict(out.get(timeout=5) for _ in procs)
    assert sum(sent.values()) == 40, sent
    db = open_database(where)
    with db.connect() as c:
        rows = c.execute("SELECT to_address, count(*) FILTER (WHERE status = 'sent'), "
                         "count(*) FILTER (WHERE skip_reason = 'repeat-window') FROM email_messages GROUP BY 1"
                         ).fetchall()
    assert len(rows) == 40 and all(s == 1 and r == 1 for _, s, r in rows)


def test_poison_is_quarantined_and_replay_marked_on_postgres(db, tmp_path):
    from pipelines.common import quarantine

    templates = write_sample_templates(tmp_path / "t")
    h = handler(db, templates, RecordingTransport())
    h.handle([msg(1, "{not json"), msg(1, "{not json")])   # a redelivery of the same poison
    with db.connect() as c:
        rows = quarantine.pending(c, "email-requests")
        assert [(q, m) for q, m, _, _ in rows] == [("email-requests:sqs-1", "sqs-1")]
        quarantine.mark_replayed(c, [("email-requests:sqs-1", "ok")])
        assert quarantine.pending(c, "email-requests") == []
        assert c.execute("SELECT replay_result, replayed_at IS NOT NULL FROM quarantine").fetchall() == [("ok", True)]
