"""Writers hold the DuckDB file only while they commit: another process can open it read-only
while a send run is sending (between its claim and its record commits), and a stop mid-batch
records what was sent and leaves nothing pending that the transport never saw."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from pipelines.common.consumer import process_batch
from pipelines.common.queue_message import QueueMessage
from pipelines.common.stop import Stopped
from pipelines.email.consumer import EmailRequestConsumer
from pipelines.email.builder import Builder
from pipelines.email.sending import RetryPolicy, Sender
from pipelines.schema import database
from pipelines.store.store import Store
from tests.fakes import RecordingTransport, sample_kinds, write_sample_templates

OPEN_READ_ONLY = """
import sys, duckdb
try:
    duckdb.connect(sys.argv[1], read_only=True).close()
    print("opened")
except duckdb.IOException as exc:
    print("locked" if "lock" in str(exc).lower() else f"error {exc}")
"""


def other_process_can_read(path: str) -> str:
    return subprocess.run([sys.executable, "-c", OPEN_READ_ONLY, path], capture_output=True, text=True,
                          timeout=60).stdout.strip()


@pytest.fixture
def db(tmp_path):
    return database(str(tmp_path / "live.duckdb"))


def request(i: int) -> QueueMessage:
    return QueueMessage(f"sqs-{i}", f"rh-{i}", json.dumps({
        "request_id": f"req-{i}", "kind": "password-reset", "recipients": [{"email": f"u{i}@x.org", "verified": True}],
        "context": {"n_hours": 6, "token": "t", "username": "u"}}))


def consumer(tmp_path, transport, **kw) -> EmailRequestConsumer:
    kinds = sample_kinds()
    templates = write_sample_templates(tmp_path / "t")
    return EmailRequestConsumer(Builder(str(templates), kinds=kinds),
                                Sender(transport, concurrency=1, policy=RetryPolicy(base_delay=0.001)),
                                default_sender="noreply@mailroom.test", transport_name="recording", kinds=kinds, **kw)


def test_a_transaction_holds_the_file_and_nothing_else_does(db):
    store = Store(db.connect)
    with store.transaction() as conn:
        conn.execute("SELECT 1")
        assert other_process_can_read(db.path) == "locked"
    assert other_process_can_read(db.path) == "opened"
    with store.transaction() as conn:
        assert conn.execute("SELECT count(*) FROM email_messages").fetchone() == (0,)
    assert store.opens == 2


def test_the_file_is_free_while_a_send_run_sends(db, tmp_path):
    seen: list[str] = []

    class Probing(RecordingTransport):
        def send(self, email):
            seen.append(other_process_can_read(db.path))   # another process, mid-send
            return super().send(email)

    with consumer(tmp_path, Probing(), inflight_window=1) as c:
        counters = process_batch(Store(db.connect), c, [request(i) for i in range(3)])
    assert counters["sent"] == 3
    assert seen == ["opened"] * 3
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM email_messages WHERE status = 'sent'").fetchone() == (3,)


def test_a_stop_mid_batch_records_what_was_sent_and_releases_the_rest(db, tmp_path):
    holder: list[EmailRequestConsumer] = []

    class StopsOnSecondSend(RecordingTransport):
        def send(self, email):
            if self.sent:                 # a signal arrives while the second send is in the transport
                holder[0].request_stop()
            return super().send(email)

    c = consumer(tmp_path, StopsOnSecondSend(), inflight_window=2)
    holder.append(c)
    with c, pytest.raises(Stopped) as stopped:
        process_batch(Store(db.connect), c, [request(i) for i in range(6)])
    counters = stopped.value.counters
    with db.connect() as conn:
        rows = dict(conn.execute("SELECT status, count(*) FROM email_messages GROUP BY ALL").fetchall())
    # Window 1 (sends 1-2) reached the transport and is recorded; window 2 was queued behind the
    # rate but never handed over, window 3 never submitted: their claims are released.
    assert (counters["sent"], counters["released"], counters["messages"]) == (2, 4, 6)
    assert rows == {"sent": 2}
    assert [e.recipient for e in c.sender.transport.sent] == ["u0@x.org", "u1@x.org"]


def test_sent_at_is_when_the_transport_accepted_the_message(db, tmp_path):
    import time
    from datetime import datetime, timezone

    accepted: dict[str, datetime] = {}

    class Slow(RecordingTransport):
        def send(self, email):
            if email.recipient == "u1@x.org":
                time.sleep(0.5)   # the window (both messages) is recorded after this one
            message_id = super().send(email)
            accepted[message_id] = datetime.now(timezone.utc)   # the provider's call returns: accepted
            return message_id

    with consumer(tmp_path, Slow(), inflight_window=2) as c:
        process_batch(Store(db.connect), c, [request(i) for i in range(2)])
    with db.connect() as conn:
        rows = conn.execute("SELECT message_id, sent_at, status_at FROM email_messages").fetchall()
    assert len(rows) == 2
    for message_id, sent_at, status_at in rows:
        assert abs((sent_at - accepted[message_id]).total_seconds()) < 0.1, (sent_at, accepted[message_id])
        assert status_at == sent_at
    first, second = sorted(r[1] for r in rows)
    assert (second - first).total_seconds() >= 0.4   # each its own time, not the window's commit time
