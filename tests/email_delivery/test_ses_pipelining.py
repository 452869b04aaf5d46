"""The SES drain verifies the next batch while it applies and commits this one: the kit hands
received messages to the consumer (on_receive) from its receiver threads, and the verify workers
start on them during the current batch's commit. These tests hold that overlap to the same
guarantees as the sequential run: commit before delete, batches committed in the order they were
received and each once, a stop loses nothing and leaves no worker, a verify failure in the next
batch neither loses it nor commits it early."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from pipelines.common.consumer import run_consumer
from pipelines.common.drain import DrainOptions, drain
from pipelines.common.sns.cert_store import CertStore
from pipelines.common.sns.verify import SnsVerifier
from pipelines.common.stop import StopRequest
from pipelines.email_delivery.consumer import SesNotificationConsumer
from pipelines.email_delivery.parallel import PooledSesNotificationConsumer
from pipelines.schema import database
from pipelines.store.store import Store
from tests.email_delivery.ses_helpers import TOPIC, ses_message, signed, write_identity

N = 60
BATCH = 10


class RedeliveringQueue:
    """An SQS queue in memory, safe to call from several threads: received messages stay in flight
    until deleted; `redeliver()` makes the undeleted ones visible again (their visibility ran out)."""

    queue_name = "ses-notifications-test"
    supports_concurrent_calls = True

    def __init__(self, bodies: list[str]):
        self.lock = threading.Lock()
        self.visible = [(f"sqs-{i}", body) for i, body in enumerate(bodies)]
        self.in_flight: dict[str, tuple[str, str]] = {}   # receipt handle -> (message id, body)
        self.received: list[str] = []                      # message ids in the order handed out
        self.deleted: list[str] = []
        self._handles = 0

    def receive(self, max_messages: int = 10, wait_seconds: int = 1) -> list[dict]:
        with self.lock:
            taken, self.visible = self.visible[:max_messages], self.visible[max_messages:]
            out = []
            for message_id, body in taken:
                self._handles += 1
                handle = f"rh-{self._handles}"
                self.in_flight[handle] = (message_id, body)
                self.received.append(message_id)
                out.append({"MessageId": message_id, "ReceiptHandle": handle, "Body": body})
            return out

    def delete(self, receipt_handles: list[str]) -> list[str]:
        with self.lock:
            for handle in receipt_handles:
                self.deleted.append(self.in_flight.pop(handle)[0])
            return []

    def redeliver(self) -> None:
        with self.lock:
            self.visible = sorted(self.in_flight.values(), key=lambda m: int(m[0].split("-")[1])) + self.visible
            self.in_flight.clear()


class Recording(PooledSesNotificationConsumer):
    """The op's consumer, recording what it was handed and in which order it committed."""

    def __init__(self, *args, on_commit=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[str] = []        # on_receive, in order
        self.seen_in: set[str] = set()   # names of the threads that called on_receive
        self.commits: list[list[str]] = []
        self.on_commit = on_commit
        self.more = threading.Condition()

    def on_receive(self, messages):
        with self.more:
            self.seen.extend(m.sqs_message_id for m in messages)
            self.seen_in.add(threading.current_thread().name)
            self.more.notify_all()
        super().on_receive(messages)

    def wait_until_seen(self, count: int, timeout: float = 10.0) -> bool:
        """Inside commit: True once `count` messages have reached on_receive. (Checks inside a
        commit record what they find: an assertion there would be caught by the kit's second
        line of defence and the batch committed message by message.)"""
        with self.more:
            return self.more.wait_for(lambda: len(self.seen) >= count, timeout)

    def commit(self, conn, prepared):
        counters = super().commit(conn, prepared)
        self.commits.append(list(prepared.outcomes))
        if self.on_commit is not None:
            self.on_commit(self)
        return counters


@pytest.fixture
def identity(tmp_path):
    return write_identity(tmp_path / "certs")


@pytest.fixture
def db(tmp_path):
    db = database(str(tmp_path / "mailroom.duckdb"))
    with db.connect() as conn:
        for i in range(N):
            conn.execute("INSERT INTO email_messages (request_id, to_address, kind, message_id, status, sent_at) "
                         "VALUES (?, ?, 'password-reset', ?, 'sent', now())", [f"r{i}", f"u{i}@example.org", f"m{i}"])
    return db


def bodies(identity, forged: set[int] = frozenset()) -> list[str]:
    out = []
    for i in range(N):
        body = signed(identity, ses_message("Delivery", f"m{i}", [f"u{i}@example.org"]), sns_id=f"sns-{i}")
        out.append(body.replace('"Signature": "', '"Signature": "AAAA') if i in forged else body)
    return out


def consumer(tmp_path, **kwargs) -> Recording:
    verifier = SnsVerifier([TOPIC], CertStore(tmp_path / "certs"), max_age_seconds=0)
    return Recording(SesNotificationConsumer(verifier), workers=2, chunk=5, **kwargs)


def options(**kwargs) -> DrainOptions:
    # One receiver: messages reach on_receive, the batch and the commit in the order the queue
    # handed them out, so "in order" below is exact. Prefetch (one batch) is the kit's default.
    return DrainOptions(max_messages=N, max_seconds=60, batch_size=BATCH, receivers=1, **kwargs)


def stored(db) -> list[str]:
    with db.connect() as conn:
        return [r[0] for r in conn.execute("SELECT message_id FROM email_events ORDER BY message_id").fetchall()]


def quarantined(db) -> list[str]:
    with db.connect() as conn:
        return [r[0] for r in conn.execute("SELECT sqs_message_id FROM quarantine ORDER BY 1").fetchall()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_gone(pids: list[int], seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def test_on_receive_runs_off_the_drain_thread_while_the_previous_batch_is_handled():
    # handle() of the first batch waits for the second batch to reach on_receive: before the
    # pipelining, on_receive ran in the drain thread after handle returned, and this timed out.
    class Queue:
        queue_name = "q"
        supports_concurrent_calls = True

        def __init__(self):
            self.pending = [{"MessageId": f"m{i}", "ReceiptHandle": f"h{i}", "Body": str(i)} for i in range(40)]
            self.lock = threading.Lock()

        def receive(self, max_messages=10, wait_seconds=1):
            with self.lock:
                out, self.pending = self.pending[:max_messages], self.pending[max_messages:]
                return out

        def delete(self, handles):
            return []

    seen: list[str] = []
    threads: set[str] = set()
    calls = threading.Condition()
    inside = [0]
    overlapped: list[bool] = []

    def on_receive(messages):
        with calls:
            inside[0] += 1
            assert inside[0] == 1, "two on_receive calls at once"
        time.sleep(0.001)
        with calls:
            inside[0] -= 1
            seen.extend(m.sqs_message_id for m in messages)
            threads.add(threading.current_thread().name)
            calls.notify_all()

    def handle(batch):
        with calls:
            assert all(m.sqs_message_id in seen for m in batch), "a message reached handle before on_receive"
            if not overlapped:
                overlapped.append(calls.wait_for(lambda: len(seen) >= 2 * len(batch), 5))

    stats = drain(Queue(), handle, DrainOptions(batch_size=10, receivers=4), on_receive=on_receive)
    assert stats["received"] == stats["deleted"] == 40
    assert sorted(seen) == sorted(f"m{i}" for i in range(40))
    assert threading.main_thread().name not in threads and all(t.startswith("sqs-receive") for t in threads)
    assert overlapped[0], "the next batch did not reach on_receive while the first was handled"


def test_batches_commit_in_order_each_once_and_only_then_are_deleted(db, tmp_path, identity):
    queue = RedeliveringQueue(bodies(identity))
    deleted_early: list[str] = []
    overlapped: list[bool] = []

    def check(c: Recording) -> None:
        # Inside the commit of a batch: nothing of it is deleted yet, and the next batch is
        # already in the verify pool's hands.
        deleted_early.extend(set(c.commits[-1]) & set(queue.deleted))
        if len(c.commits) < N // BATCH:
            overlapped.append(c.wait_until_seen((len(c.commits) + 1) * BATCH))

    with consumer(tmp_path, on_commit=check) as ses, Store(db.connect) as store:
        report = run_consumer(queue, ses, store, options())
        pids = ses.worker_pids()
    assert deleted_early == []
    assert overlapped == [True] * (N // BATCH - 1), "a next batch did not reach the workers during a commit"
    assert [m for batch in ses.commits for m in batch] == queue.received == [f"sqs-{i}" for i in range(N)]
    assert all(t.startswith("sqs-receive") for t in ses.seen_in)
    assert sorted(queue.deleted) == sorted(queue.received)
    assert stored(db) == sorted(f"m{i}" for i in range(N)) and quarantined(db) == []
    assert report.counters["events_new"] == N and report.counters["verify_ms"] >= 0
    assert wait_gone(pids) == []


def test_a_stop_while_the_next_batch_is_being_verified_loses_nothing_and_leaves_no_worker(db, tmp_path, identity):
    queue = RedeliveringQueue(bodies(identity))
    stop = StopRequest()
    overlapped: list[bool] = []

    def stop_after_the_first(c: Recording) -> None:
        if len(c.commits) == 1:
            overlapped.append(c.wait_until_seen(2 * BATCH))   # the second batch is with the workers now
            stop.request("test: stop during the commit")

    with consumer(tmp_path, on_commit=stop_after_the_first) as ses, Store(db.connect) as store:
        report = run_consumer(queue, ses, store, options(), stop=stop)
        pids = ses.worker_pids()
        assert len(pids) == 2
    assert report.stopped and overlapped == [True]
    assert wait_gone(pids) == [], "verify workers outlived the stopped run"
    # The committed batch is deleted and stored; what was received beyond it (and handed to the
    # workers) is neither deleted nor stored: it is still on the queue.
    assert ses.commits == [[f"sqs-{i}" for i in range(BATCH)]]
    assert sorted(queue.deleted) == sorted(ses.commits[0])
    assert stored(db) == sorted(f"m{i}" for i in range(BATCH))
    assert len(ses.seen) >= 2 * BATCH

    queue.redeliver()
    with consumer(tmp_path) as again, Store(db.connect) as store:
        run_consumer(queue, again, store, options())
    assert sorted(queue.deleted) == sorted(f"sqs-{i}" for i in range(N))
    assert stored(db) == sorted(f"m{i}" for i in range(N)) and quarantined(db) == []


def test_a_forged_notification_in_the_next_batch_is_quarantined_in_its_own_batch(db, tmp_path, identity):
    queue = RedeliveringQueue(bodies(identity, forged={BATCH + 3}))
    with consumer(tmp_path) as ses, Store(db.connect) as store:
        report = run_consumer(queue, ses, store, options())
    assert [m for batch in ses.commits for m in batch] == [f"sqs-{i}" for i in range(N)]
    assert f"sqs-{BATCH + 3}" in ses.commits[1]
    assert quarantined(db) == [f"sqs-{BATCH + 3}"] and report.counters["quarantined"] == 1
    assert stored(db) == sorted(f"m{i}" for i in range(N) if i != BATCH + 3)
    assert sorted(queue.deleted) == sorted(queue.received)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_a_worker_killed_while_it_verifies_the_next_batch_loses_nothing_and_commits_in_order(db, tmp_path, identity):
    queue = RedeliveringQueue(bodies(identity))
    killed: list[int] = []

    def kill_a_worker(c: Recording) -> None:
        if len(c.commits) == 1 and c.wait_until_seen(2 * BATCH):
            pid = c.worker_pids()[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    with consumer(tmp_path, on_commit=kill_a_worker) as ses, Store(db.connect) as store:
        pids = ses.worker_pids()
        report = run_consumer(queue, ses, store, options())
    assert killed and ses.pool is None, "the broken pool was not given up"
    assert [m for batch in ses.commits for m in batch] == [f"sqs-{i}" for i in range(N)]
    assert stored(db) == sorted(f"m{i}" for i in range(N)) and quarantined(db) == []
    assert report.counters["events_new"] == N
    assert sorted(queue.deleted) == sorted(queue.received)
    assert wait_gone(pids) == []
