"""The drain loop's ordering guarantee: commit (handle) before delete, bounded by count."""

import threading
import time

import pytest

from pipelines.common.drain import DrainOptions, drain


class ListQueue:
    queue_name = "q"

    def __init__(self, bodies):
        self.pending = [{"MessageId": f"m{i}", "ReceiptHandle": f"h{i}", "Body": b,
                         "Attributes": {"ApproximateReceiveCount": "1"}} for i, b in enumerate(bodies)]
        self.deleted: list[str] = []
        self.log: list[str] = []

    def receive(self, max_messages=10, wait_seconds=1):
        out, self.pending = self.pending[:max_messages], self.pending[max_messages:]
        self.log.append(f"receive:{len(out)}")
        return out

    def delete(self, handles):
        self.log.append(f"delete:{len(handles)}")
        self.deleted.extend(handles)
        return []


def test_handle_commits_before_anything_is_deleted():
    q = ListQueue([str(i) for i in range(25)])
    seen = []

    def handle(batch):
        q.log.append(f"handle:{len(batch)}")
        seen.extend(m.body for m in batch)

    stats = drain(q, handle, DrainOptions(batch_size=20))
    assert seen == [str(i) for i in range(25)]
    assert q.log == ["receive:10", "receive:10", "handle:20", "delete:20",
                     "receive:5", "receive:0", "handle:5", "delete:5"]
    assert stats["received"] == stats["deleted"] == 25
    assert stats["receive_calls"] == 4 and stats["delete_calls"] == 3


def test_a_failing_handle_deletes_nothing():
    q = ListQueue(["a", "b"])

    def handle(batch):
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError):
        drain(q, handle)
    assert q.deleted == []


def test_bounded_by_count():
    q = ListQueue([str(i) for i in range(50)])
    stats = drain(q, lambda batch: None, DrainOptions(max_messages=23))
    assert stats["received"] == 23
    assert len(q.pending) == 27


def test_quarantine_keeps_every_row_once_with_its_first_reason(tmp_path):
    from pipelines.common.quarantine import Quarantined, quarantine
    from pipelines.schema import database

    db = database(str(tmp_path / "q.duckdb"))
    flood = [Quarantined("ses-notifications", f"sqs-{i}", f"body {i}", "signature does not verify")
             for i in range(2_000)]
    with db.connect() as conn:
        # The same message twice in one call and again later: one row, the first reason.
        assert quarantine(conn, flood + [Quarantined("ses-notifications", "sqs-7", "body 7", "second")]) == 2_000
        assert quarantine(conn, [Quarantined("ses-notifications", "sqs-7", "body 7", "third")]) == 1
        rows = conn.execute("SELECT count(*), count(DISTINCT quarantine_id) FROM quarantine").fetchone()
        reason = conn.execute("SELECT raw_body, reason FROM quarantine "
                              "WHERE quarantine_id = 'ses-notifications:sqs-7'").fetchone()
    assert rows == (2_000, 2_000)
    assert reason == ("body 7", "signature does not verify")


# ---- the concurrent drain: receivers, prefetch, concurrent deletes ------------------------------

class SharedQueue:
    """A queue whose calls may overlap (as SQSQueueResource's do), each taking `latency` seconds;
    it records what the drain did, and when."""

    supports_concurrent_calls = True
    queue_name = "shared"

    def __init__(self, n, latency=0.005, delete_latency=None):
        self.pending = [{"MessageId": f"m{i}", "ReceiptHandle": f"h{i}", "Body": str(i)} for i in range(n)]
        self.latency = latency
        self.delete_latency = latency if delete_latency is None else delete_latency
        self.lock = threading.Lock()
        self.deleted: list[str] = []
        self.committed: set[str] = set()
        self.deleted_before_commit: list[str] = []
        self.receive_starts: list[float] = []
        self.deleting = self.max_deleting = 0
        self.received = 0
        self.max_uncommitted = 0

    def receive(self, max_messages=10, wait_seconds=1):
        with self.lock:
            self.receive_starts.append(time.monotonic())
        time.sleep(self.latency)
        with self.lock:
            out, self.pending = self.pending[:max_messages], self.pending[max_messages:]
            self.received += len(out)
            self.max_uncommitted = max(self.max_uncommitted, self.received - len(self.committed))
        return out

    def delete(self, handles):
        with self.lock:
            self.deleting += 1
            self.max_deleting = max(self.max_deleting, self.deleting)
            self.deleted_before_commit += [h for h in handles if h not in self.committed]
        time.sleep(self.delete_latency)
        with self.lock:
            self.deleting -= 1
            self.deleted.extend(handles)
        return []

    def commit(self, batch):
        with self.lock:
            self.committed.update(m.receipt_handle for m in batch)


def test_concurrent_drain_deletes_each_message_once_and_only_after_its_commit():
    q = SharedQueue(1_000)
    stats = drain(q, q.commit, DrainOptions(batch_size=100, receivers=4, deleters=4))
    assert stats["received"] == stats["deleted"] == 1_000 and stats["delete_failures"] == 0
    assert q.deleted_before_commit == []
    assert sorted(q.deleted) == sorted(f"h{i}" for i in range(1_000))
    assert stats["receive_calls"] + stats["delete_calls"] <= 0.25 * 1_000


def test_the_next_batch_is_received_while_this_one_is_handled():
    q = SharedQueue(400, latency=0.01)
    spans: list[tuple[float, float]] = []

    def slow_handle(batch):
        began = time.monotonic()
        time.sleep(0.2)
        q.commit(batch)
        spans.append((began, time.monotonic()))

    drain(q, slow_handle, DrainOptions(batch_size=100, receivers=4))
    during = [t for t in q.receive_starts if any(a < t < b for a, b in spans)]
    assert len(during) >= 5, "no receive overlapped the handling of a batch"


def test_deletes_are_concurrent_batch_calls():
    q = SharedQueue(300, latency=0.001, delete_latency=0.05)
    stats = drain(q, q.commit, DrainOptions(batch_size=100, deleters=8))
    assert stats["delete_calls"] == 30 and stats["deleted"] == 300
    assert q.max_deleting > 1


def test_received_but_uncommitted_stays_within_batch_plus_prefetch():
    q = SharedQueue(2_000, latency=0.002)

    def slow_handle(batch):
        time.sleep(0.05)
        q.commit(batch)

    drain(q, slow_handle, DrainOptions(batch_size=100, prefetch=50, receivers=8))
    assert 100 <= q.max_uncommitted <= 150


def test_concurrent_receivers_stop_at_max_messages():
    q = SharedQueue(50)
    stats = drain(q, q.commit, DrainOptions(max_messages=23, receivers=8))
    assert stats["received"] == 23 and len(q.pending) == 27


def test_concurrent_drain_deletes_nothing_when_a_handle_fails():
    q = SharedQueue(300)
    batches = []

    def handle(batch):
        if batches:
            raise RuntimeError("db down")
        batches.append(batch)
        q.commit(batch)

    with pytest.raises(RuntimeError):
        drain(q, handle, DrainOptions(batch_size=100, receivers=4, deleters=4))
    # the first batch was committed and deleted; nothing of the failed one or after it
    assert sorted(q.deleted) == sorted(m.receipt_handle for m in batches[0])
    assert q.deleted_before_commit == []


def test_the_drain_stops_within_its_time_limit():
    class Endless(SharedQueue):
        def receive(self, max_messages=10, wait_seconds=1):
            time.sleep(self.latency)
            with self.lock:
                self.received += max_messages
                start = self.received
            return [{"MessageId": f"e{start + i}", "ReceiptHandle": f"e{start + i}", "Body": "x"}
                    for i in range(max_messages)]

    q = Endless(0, latency=0.02)
    started = time.monotonic()
    stats = drain(q, lambda batch: time.sleep(0.01), DrainOptions(max_messages=10**9, max_seconds=1.0,
                                                                 batch_size=200, receivers=8))
    took = time.monotonic() - started
    assert took < 1.5 and stats["received"] > 0 and stats["received"] == stats["deleted"]


def test_sequential_options_reproduce_one_call_at_a_time():
    class Logged(ListQueue):
        supports_concurrent_calls = True

    q = Logged([str(i) for i in range(25)])

    def handle(batch):
        q.log.append(f"handle:{len(batch)}")

    drain(q, handle, DrainOptions.sequential(batch_size=20))
    assert q.log == ["receive:10", "receive:10", "handle:20", "delete:20",
                     "receive:5", "receive:0", "handle:5", "delete:5"]


def test_the_keeper_extends_messages_whose_batch_runs_long_and_only_those():
    class Extending(SharedQueue):
        def __init__(self, n):
            super().__init__(n, latency=0.001)
            self.extended: list[tuple[str, int]] = []

        def visibility_timeout(self):
            return 1

        def change_visibility(self, handles, seconds):
            with self.lock:
                self.extended += [(h, seconds) for h in handles]
            return []

    slow = Extending(20)

    def slow_handle(batch):
        time.sleep(1.5)       # longer than the 1-s visibility timeout
        slow.commit(batch)

    stats = drain(slow, slow_handle, DrainOptions(batch_size=10, receivers=1))
    assert {h for h, _ in slow.extended} == {f"h{i}" for i in range(20)}
    assert {s for _, s in slow.extended} == {1} and stats["visibility_extended"] >= 20

    fast = Extending(20)
    stats = drain(fast, fast.commit, DrainOptions(batch_size=10, receivers=1))
    assert fast.extended == [] and stats["visibility_calls"] == 0


def test_a_stop_takes_no_new_messages_and_deletes_only_finished_batches():
    from pipelines.common.stop import Stopped, StopRequest

    # Stop requested while batch 2 is being received: batch 1 was finished and deleted; batch 2
    # (received, never handed) is abandoned on the queue; no receive follows.
    q = ListQueue([str(i) for i in range(60)])
    stop = StopRequest()
    receive = q.receive

    def receive_then_stop(max_messages=10, wait_seconds=1):
        out = receive(max_messages, wait_seconds)
        if q.deleted:
            stop.request("test")
        return out

    q.receive = receive_then_stop
    stats = drain(q, lambda batch: None, DrainOptions(batch_size=20), stop=stop)
    assert q.deleted == [f"h{i}" for i in range(20)]
    assert (stats["received"], stats["abandoned"], stats["stopped"]) == (30, 10, 1)

    # A batch whose handle stops part-way (Stopped) is not deleted either.
    q = ListQueue([str(i) for i in range(30)])

    def handle(batch):
        raise Stopped()

    stats = drain(q, handle, DrainOptions(batch_size=20), stop=StopRequest())
    assert q.deleted == [] and stats["stopped_in_batch"] == 20 and stats["received"] == 20


def test_no_time_limit_and_a_failing_receiver_are_not_silent():
    # max_seconds=inf (the benchmarks' setting) must drain, not end at once with nothing received.
    q = ListQueue([str(i) for i in range(25)])
    stats = drain(q, lambda batch: None, DrainOptions(batch_size=10, max_seconds=float("inf")))
    assert stats["received"] == 25 and len(q.deleted) == 25

    class Broken(ListQueue):
        def receive(self, max_messages=10, wait_seconds=1):
            raise RuntimeError("receive exploded")

    with pytest.raises(RuntimeError, match="receive exploded"):
        drain(Broken(["x"]), lambda batch: None, DrainOptions(batch_size=10))



def _local_queue(local_stack, prefix):
    import uuid

    from resources.aws import SQSQueueResource

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    url = local_stack.client("sqs").create_queue(QueueName=name)["QueueUrl"]
    return url, SQSQueueResource(region_name="us-east-1", queue_name=name, endpoint_url=local_stack.env["AWS_ENDPOINT_URL"],
                                 aws_access_key_id="testing", aws_secret_access_key="testing")


def _left_on(local_stack, url) -> int:
    attrs = local_stack.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


_CONCURRENT_CALLS = """
import sys
from concurrent.futures import ThreadPoolExecutor

import devstack.moto_server  # noqa: F401 - the local stack's moto, patched as its server runs it
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sqs.models import sqs_backends

sys.setswitchinterval(1e-5)   # threads switch often: what load does to the server's threads, sooner
sqs = sqs_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
received = distinct = left = 0
for round_ in range(3):
    name = f"q{round_}"
    queue = sqs.create_queue(name)
    for i in range(200):
        sqs.send_message(name, f"m{i}")
    got = []

    def receive(_):
        while batch := sqs.receive_message(name, 10, 0, 30):
            got.extend(batch)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(receive, range(8)))
    handles = [m.receipt_handle for m in got]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda s: sqs.delete_message_batch(name, [{"Id": str(i), "ReceiptHandle": h}
                                                                for i, h in enumerate(handles[s:s + 10])]),
                      range(0, len(handles), 10)))
    received, distinct, left = received + len(got), distinct + len({m.id for m in got}), left + len(queue._messages)
print(received, distinct, left)
"""


def test_the_local_sqs_gives_a_message_to_one_receive_and_loses_no_concurrent_delete():
    """What the drain's concurrent calls (8 receives and 8 deletes in flight) need from SQS, checked
    at the local stack's moto. Plain moto 5.2.5 is not safe under concurrent calls: DeleteMessage
    rebuilds the message list from a copy, so of two deletes at once one is lost (the message comes
    back after its visibility timeout although the delete answered success: the realistic Stripe
    history test then handled ~20 messages a second time), and two receives at once can take the
    same message. One round of this scenario on plain moto: 0-95 of 200 deletes lost and 1-3
    messages received twice, in each of 6 runs; here 3 rounds. devstack/moto_server.py makes each SQS call atomic. In a subprocess:
    the patches are process-wide."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _CONCURRENT_CALLS], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    received, distinct, left = map(int, out.stdout.split())
    assert received == distinct == 600, "a message was given to two receives"
    assert left == 0, f"{left} deleted messages are back on the queue"


def test_the_concurrent_drain_against_the_local_sqs_handles_each_message_once_and_leaves_none(local_stack):
    from collections import Counter

    """The drain as the consumers run it (8 receivers, 8 deleters, batches flushed while the next is
    received) against the local stack's SQS server: each message handled once, none left."""
    url, queue = _local_queue(local_stack, "drain")
    n = 300
    queue.send(f"m{i}" for i in range(n))
    handled: Counter = Counter()
    stats = drain(queue, lambda batch: handled.update(m.body for m in batch),
                  DrainOptions(batch_size=100, wait_seconds=0))
    left = _left_on(local_stack, url)
    local_stack.client("sqs").delete_queue(QueueUrl=url)
    assert stats["deleted"] == n and stats["delete_failures"] == 0 and stats["received_again"] == 0, stats
    assert sorted(handled.values()) == [1] * n and left == 0, (left, stats)
