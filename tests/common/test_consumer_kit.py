"""The consumer kit's second line of defence and its visibility-timeout bound, against a real
DuckDB file (and, for the timeout, the local moto queue)."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

import pytest

from pipelines.common.consumer import Prepared, QueueConsumer, process_batch, replay_quarantine, run_consumer
from pipelines.common.counters import Counters
from pipelines.common.drain import DrainOptions
from pipelines.common.quarantine import Quarantined
from pipelines.common.queue_message import QueueMessage
from pipelines.schema import database
from pipelines.store.store import Store
from pipelines.store.write import STR, arrow, insert
from tests.waiting import wait_until

SECRET = "tok_live_SECRET_do_not_log"


@dataclass
class PreparedRows(Prepared):
    rows: list[tuple[str, str]] = field(default_factory=list)


class RowConsumer(QueueConsumer):
    """Stores each body in kit_rows. Bodies starting with "refuse" are refused (the first line of
    defence); a body containing "explode" makes prepare raise; the kit_rows CHECK constraint
    rejects a body starting with "bad", so committing one raises inside DuckDB."""

    source = "kit-test"

    def __init__(self):
        self.prepare_calls: list[int] = []

    def prepare(self, messages: list[QueueMessage]) -> PreparedRows:
        self.prepare_calls.append(len(messages))
        out = PreparedRows()
        for m in messages:
            if "explode" in m.body:
                raise ValueError(f"could not handle {m.body}")   # the message quotes the body
            if m.body.startswith("refuse"):
                out.quarantined.append(Quarantined(self.source, m.sqs_message_id, m.body, "refused: test"))
                out.outcomes[m.sqs_message_id] = "refused: test"
                continue
            out.rows.append((m.sqs_message_id, m.body))
            out.outcomes[m.sqs_message_id] = None
        return out

    def commit(self, conn, prepared: PreparedRows) -> Counters:
        n = insert(conn, "kit_rows", arrow(id=(STR, [r[0] for r in prepared.rows]),
                                          body=(STR, [r[1] for r in prepared.rows])),
                   on_conflict="(id) DO NOTHING")
        return Counters(stored=n)


@pytest.fixture
def store(tmp_path):
    db = database(str(tmp_path / "kit.duckdb"))
    with db.connect() as conn:
        conn.execute("CREATE TABLE kit_rows (id VARCHAR PRIMARY KEY, body VARCHAR NOT NULL "
                     "CHECK (body NOT LIKE 'bad%'))")
    with Store(db.connect) as s:
        yield s


def msgs(*bodies: str) -> list[QueueMessage]:
    return [QueueMessage(f"m{i}", f"rh{i}", b) for i, b in enumerate(bodies)]


def stored(store: Store) -> list[str]:
    with store.transaction() as conn:
        return [r[0] for r in conn.execute("SELECT body FROM kit_rows ORDER BY id").fetchall()]


def quarantined(store: Store) -> dict[str, str]:
    with store.transaction() as conn:
        return dict(conn.execute("SELECT sqs_message_id, reason FROM quarantine ORDER BY 1").fetchall())


def test_a_clean_batch_is_prepared_and_committed_once(store):
    consumer = RowConsumer()
    counters = process_batch(store, consumer, msgs("a", "refuse me", "b"))
    assert consumer.prepare_calls == [3]
    assert stored(store) == ["a", "b"]
    assert quarantined(store) == {"m1": "refused: test"}
    assert (counters["messages"], counters["stored"], counters["quarantined"]) == (3, 2, 1)
    assert "one_by_one" not in counters


def test_prepare_raising_quarantines_that_message_and_the_batch_goes_on(store, caplog):
    consumer = RowConsumer()
    caplog.set_level(logging.ERROR)
    counters = process_batch(store, consumer, msgs("a", f"explode {SECRET}", "refuse me", "b"))
    assert consumer.prepare_calls == [4, 1, 1, 1, 1]          # the batch, then message by message
    assert stored(store) == ["a", "b"]
    assert quarantined(store) == {"m1": "internal error: ValueError", "m2": "refused: test"}
    assert (counters["stored"], counters["quarantined"], counters["internal_errors"]) == (2, 2, 1)
    # The traceback is logged (where it was raised) but not the exception's message, which quoted the body.
    assert "Traceback" in caplog.text and "in prepare" in caplog.text
    assert SECRET not in caplog.text


def test_commit_raising_rolls_back_and_commits_one_by_one(store):
    consumer = RowConsumer()
    counters = process_batch(store, consumer, msgs("a", "bad row", "refuse me", "b"))
    assert stored(store) == ["a", "b"]
    assert quarantined(store) == {"m1": "internal error: ConstraintException", "m2": "refused: test"}
    assert counters["internal_errors"] == 1 and counters["one_by_one"] == 4
    # Nothing of the failed batch commit survived the rollback: each row exactly once.
    with store.transaction() as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM kit_rows").fetchone() == (2, 2)


def test_a_body_duckdb_cannot_store_is_quarantined_escaped(store):
    # A lone surrogate (JSON's "\\ud800") cannot be encoded as UTF-8: committing it raises, and the
    # quarantine row keeps its escape instead.
    counters = process_batch(store, RowConsumer(), msgs("a", "lone \ud800 surrogate"))
    assert stored(store) == ["a"]
    assert quarantined(store) == {"m1": "internal error: UnicodeEncodeError"}
    assert counters["internal_errors"] == 1
    with store.transaction() as conn:
        assert conn.execute("SELECT raw_body FROM quarantine").fetchone()[0] == "lone \\ud800 surrogate"


class LateRefusals(RowConsumer):
    """Refuses in commit (after reading the table) bodies starting with "late": one way to refuse."""

    def commit(self, conn, prepared: PreparedRows) -> Counters:
        for sqs_id, body in [r for r in prepared.rows if r[1].startswith("late")]:
            prepared.refuse(self.source, sqs_id, body, "refused late: test")
        prepared.rows = [r for r in prepared.rows if not r[1].startswith("late")]
        return super().commit(conn, prepared)


def test_refusals_early_and_late_are_written_by_the_kit_redacted_and_counted_once(store):
    bodies = ["a", f'refuse {{"token": "{SECRET}"}}', f"late password={SECRET}", f"b sk_live_{SECRET}"]
    counters = process_batch(store, LateRefusals(), msgs(*bodies))
    assert quarantined(store) == {"m1": "refused: test", "m2": "refused late: test"}
    assert counters["quarantined"] == 2 and stored(store) == ["a", f"b sk_live_{SECRET}"]
    with store.transaction() as conn:
        kept = [r[0] for r in conn.execute("SELECT raw_body FROM quarantine ORDER BY quarantine_id").fetchall()]
    assert kept == ['refuse {"token": "[redacted]"}', "late password=[redacted]"]


def test_a_late_refusal_on_replay_is_the_rows_result(store):
    process_batch(store, RowConsumer(), msgs("refuse late one"))

    class Fixed(LateRefusals):
        def prepare(self, messages):
            return super().prepare([QueueMessage(m.sqs_message_id, "", m.body.removeprefix("refuse "),
                                                 received_at=m.received_at) for m in messages])

    counters = replay_quarantine(store, Fixed())
    assert counters["still_failing"] == 1
    with store.transaction() as conn:
        assert conn.execute("SELECT replay_result FROM quarantine").fetchone()[0] == "refused late: test"


def test_the_run_fails_only_when_even_the_quarantine_write_fails(store):
    with store.transaction() as conn:
        conn.execute("ALTER TABLE quarantine RENAME TO quarantine_gone")
    with pytest.raises(Exception, match="quarantine"):
        process_batch(store, RowConsumer(), msgs("a", "bad row"))
    # "a" was committed on its own before "bad row" failed; its redelivery will change nothing.
    assert stored(store) == ["a"]
    with store.transaction() as conn:
        conn.execute("ALTER TABLE quarantine_gone RENAME TO quarantine")


def test_replay_runs_quarantined_rows_through_the_consumer_again(store):
    process_batch(store, RowConsumer(), msgs("a", "refuse me", "bad row"))

    class Fixed(RowConsumer):
        def prepare(self, messages):
            return super().prepare([QueueMessage(m.sqs_message_id, "", m.body.replace("refuse", "fine")
                                                 .replace("bad", "good"), received_at=m.received_at)
                                    for m in messages])

    counters = replay_quarantine(store, Fixed())
    assert counters["still_failing"] == 0 and counters["stored"] == 2
    assert stored(store) == ["a", "fine me", "good row"]
    with store.transaction() as conn:
        assert {r[0] for r in conn.execute("SELECT replay_result FROM quarantine").fetchall()} == {"ok"}


class ListQueue:
    queue_name = "list"

    def __init__(self, bodies):
        self.pending = [{"MessageId": f"m{i}", "ReceiptHandle": f"h{i}", "Body": b} for i, b in enumerate(bodies)]
        self.deleted: list[str] = []

    def receive(self, max_messages=10, wait_seconds=1):
        out, self.pending = self.pending[:max_messages], self.pending[max_messages:]
        return out

    def delete(self, handles):
        self.deleted.extend(handles)
        return []


def test_run_consumer_deletes_poison_once_it_is_quarantined(store):
    queue = ListQueue(["a", "explode", "b", "bad", "c"])
    report = run_consumer(queue, RowConsumer(), store, DrainOptions(batch_size=100))
    assert stored(store) == ["a", "b", "c"]
    assert set(quarantined(store)) == {"m1", "m3"}
    assert sorted(queue.deleted) == [f"h{i}" for i in range(5)]
    meta = report.as_metadata()
    assert meta["received"] == meta["deleted"] == 5 and meta["quarantined"] == 2 and meta["sqs_calls"] >= 2


# ---- (c) a batch never outlives the queue's visibility timeout -------------------------------------

class SlowQueue:
    """The real SQS queue, but every receive takes `delay` seconds (a slow network or endpoint)."""

    def __init__(self, inner, delay: float):
        self.inner, self.delay, self.queue_name = inner, delay, inner.queue_name

    def visibility_timeout(self) -> int:
        return self.inner.visibility_timeout()

    def receive(self, max_messages=10, wait_seconds=1):
        time.sleep(self.delay)
        return self.inner.receive(max_messages=max_messages, wait_seconds=0)

    def delete(self, handles):
        return self.inner.delete(handles)


def _slow_queue(local_stack, visibility: int, n: int) -> SlowQueue:
    from resources.aws import SQSQueueResource

    name = f"kit-visibility-{uuid.uuid4().hex[:8]}"
    local_stack.client("sqs").create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility)})
    queue = SQSQueueResource(queue_name=name, region_name="us-east-1")
    queue.send(f"body {i}" for i in range(n))
    return SlowQueue(queue, delay=0.5)


@pytest.mark.integration
def test_a_batch_is_flushed_before_half_the_visibility_timeout(local_stack, stack_env, store):
    queue = _slow_queue(local_stack, visibility=4, n=40)
    assert queue.visibility_timeout() == 4
    seen: list[QueueMessage] = []
    consumer = RowConsumer()
    original = consumer.prepare
    consumer.prepare = lambda batch: (seen.extend(batch), original(batch))[1]
    # A batch that would take 2 s to fill (4 receives of 10 at 0.5 s) must go after ~2 s (half of 4 s).
    report = run_consumer(queue, consumer, store, DrainOptions(batch_size=1_000, max_seconds=30, wait_seconds=0))
    counters = report.counters
    assert counters["flushed_by_age"] >= 1
    assert counters["received"] == counters["deleted"] == 40 and counters["delete_failures"] == 0
    assert all(m.receive_count == 1 for m in seen), "a message became visible again before its batch committed"
    assert len(stored(store)) == 40


@pytest.mark.integration
def test_without_the_age_bound_the_same_queue_redelivers(local_stack, stack_env, store):
    # The control: the same slow queue with the bound switched off shows what it prevents.
    queue = _slow_queue(local_stack, visibility=2, n=40)
    seen: list[QueueMessage] = []
    consumer = RowConsumer()
    original = consumer.prepare
    consumer.prepare = lambda batch: (seen.extend(batch), original(batch))[1]
    run_consumer(queue, consumer, store, DrainOptions(batch_size=1_000, max_seconds=8, wait_seconds=0,
                                                      visibility_share=100.0, max_messages=60))
    assert any(m.receive_count > 1 for m in seen)


@pytest.mark.integration
def test_string_message_attributes_reach_the_consumer(local_stack, stack_env, store):
    from resources.aws import SQSQueueResource

    name = f"kit-attributes-{uuid.uuid4().hex[:8]}"
    sqs = local_stack.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="with attributes", MessageAttributes={
        "Stripe-Signature": {"DataType": "String", "StringValue": "t=1700000000,v1=abc"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}})
    seen: list[QueueMessage] = []
    consumer = RowConsumer()
    original = consumer.prepare
    consumer.prepare = lambda batch: (seen.extend(batch), original(batch))[1]
    run_consumer(SQSQueueResource(queue_name=name, region_name="us-east-1"), consumer, store,
                 DrainOptions(wait_seconds=1))
    assert [m.attributes for m in seen] == [{"Stripe-Signature": "t=1700000000,v1=abc"}]


@pytest.mark.integration
def test_the_factory_replay_job_runs_quarantined_rows_again(stack_env):
    import dagster as dg

    from pipelines.definitions import defs

    db = database(stack_env["DUCKDB_PATH"])
    with db.connect() as conn:   # a notification quarantined earlier whose body still is not JSON
        conn.execute("INSERT INTO quarantine (quarantine_id, source, sqs_message_id, raw_body, reason) "
                     "VALUES ('ses-notifications:q1', 'ses-notifications', 'q1', 'not json', 'body is not JSON')")
    result = defs.resolve_job_def("replay_ses_quarantine_job").execute_in_process(
        instance=dg.DagsterInstance.ephemeral())
    assert result.success
    out = result.output_for_node("replay_ses_quarantine")
    assert (out["messages"], out["still_failing"], out["address_changes_published"]) == (1, 1, 0)
    with db.connect() as conn:
        assert conn.execute("SELECT replay_result FROM quarantine").fetchone()[0] == "body is not JSON"


# ---- (d) the concurrent drain against an SQS with a round trip (bench/sqs_endpoint.py) -------------

@pytest.fixture
def bench_sqs(monkeypatch):
    from bench.sqs_endpoint import Running

    with Running(latency_ms=10) as running:
        for name, value in {"AWS_ENDPOINT_URL": running.url, "AWS_ACCESS_KEY_ID": "testing",
                            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
        yield running


def _bench_queue(bench_sqs, bodies, visibility: int = 30):
    from resources.aws import SQSQueueResource

    name = f"kit-{uuid.uuid4().hex[:8]}"
    queue = SQSQueueResource(queue_name=name, region_name="us-east-1")
    queue.client.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility)})
    queue.send(bodies)
    bench_sqs.endpoint.Configure({"reset_stats": True})
    return queue


def _left(queue) -> int:
    a = queue.client.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])


def _visible(queue) -> int:
    a = queue.client.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"])


class SlowPrepare(RowConsumer):
    """Takes `seconds` to prepare each batch: a batch that runs long."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.received: list[QueueMessage] = []

    def prepare(self, messages):
        self.received.extend(messages)
        time.sleep(self.seconds)
        return super().prepare(messages)


@pytest.mark.integration
def test_the_concurrent_drain_commits_everything_quarantines_poison_and_empties_the_queue(bench_sqs, store):
    bodies = [f"body {i}" for i in range(600)] + ["explode 1", "bad 2", "refuse 3"]
    queue = _bench_queue(bench_sqs, bodies)
    report = run_consumer(queue, RowConsumer(), store, DrainOptions(batch_size=100, max_messages=603,
                                                                   receivers=8, deleters=8))
    c = report.counters
    assert c["received"] == c["deleted"] == 603 and c["delete_failures"] == 0 and c["batches"] >= 6
    assert len(stored(store)) == 600 and len(quarantined(store)) == 3
    assert _left(queue) == 0
    stats = bench_sqs.endpoint.Stats({})
    assert stats["received_again"] == 0
    assert report.sqs_calls <= 0.25 * 603
    assert stats["calls"]["ReceiveMessage"] + stats["calls"]["DeleteMessageBatch"] == report.sqs_calls


@pytest.mark.integration
def test_a_batch_that_runs_long_keeps_its_messages_hidden(bench_sqs, store):
    # Visibility 2 s; every batch takes 3 s to prepare. The keeper extends the messages in flight.
    queue = _bench_queue(bench_sqs, [f"body {i}" for i in range(60)], visibility=2)
    consumer = SlowPrepare(3.0)
    report = run_consumer(queue, consumer, store, DrainOptions(batch_size=30, max_messages=60, receivers=2,
                                                               wait_seconds=0, max_seconds=30))
    c = report.counters
    assert c["visibility_extended"] >= 30 and c["visibility_calls"] >= 3
    assert bench_sqs.endpoint.Stats({})["received_again"] == 0
    assert all(m.receive_count == 1 for m in consumer.received) and len(consumer.received) == 60
    assert c["deleted"] == 60 and c["delete_failures"] == 0 and _left(queue) == 0
    assert len(stored(store)) == 60


@pytest.mark.integration
def test_without_extension_the_long_batch_is_delivered_again(bench_sqs, store):
    # The control for the test above: the same run with the keeper off sees messages come back.
    queue = _bench_queue(bench_sqs, [f"body {i}" for i in range(60)], visibility=2)
    consumer = SlowPrepare(3.0)
    run_consumer(queue, consumer, store, DrainOptions(batch_size=30, max_messages=90, receivers=2,
                                                      wait_seconds=0, max_seconds=12, extend_visibility=False))
    assert bench_sqs.endpoint.Stats({})["received_again"] > 0
    assert len(stored(store)) == 60     # delivered again, stored once


@pytest.mark.integration
def test_concurrent_receivers_flush_a_batch_by_age(bench_sqs, store):
    # Receives of 10 at a 300 ms round trip with 2 receivers fill 100 in ~1.5 s: more than half of
    # the 2-s visibility timeout, so the batch must go before it is full.
    bench_sqs.endpoint.Configure({"latency_ms": 0})
    queue = _bench_queue(bench_sqs, [f"body {i}" for i in range(100)], visibility=2)
    bench_sqs.endpoint.Configure({"latency_ms": 300})
    consumer = SlowPrepare(0.0)
    report = run_consumer(queue, consumer, store, DrainOptions(batch_size=1_000, max_messages=100, receivers=2,
                                                               wait_seconds=0, extend_visibility=False))
    c = report.counters
    assert c["flushed_by_age"] >= 1 and c["batches"] >= 2
    assert bench_sqs.endpoint.Stats({})["received_again"] == 0
    assert c["deleted"] == 100 and len(stored(store)) == 100


@pytest.mark.integration
def test_a_crash_loses_nothing_and_the_redelivery_changes_nothing(bench_sqs, store):
    queue = _bench_queue(bench_sqs, [f"body {i}" for i in range(300)], visibility=1)

    class CrashesOnThirdBatch(RowConsumer):
        def commit(self, conn, prepared):
            if len(self.prepare_calls) == 3:
                raise SystemExit("killed mid-run")    # not an Exception: the kit does not catch it
            return super().commit(conn, prepared)

    with pytest.raises(SystemExit):
        run_consumer(queue, CrashesOnThirdBatch(), store, DrainOptions(batch_size=50, max_messages=300))
    first = len(stored(store))     # two batches (fewer if one went early, by age)
    assert 0 < first < 300 and _left(queue) == 300 - first
    # what the crashed run had received comes back when its 1-s visibility timeout ends
    wait_until(lambda: _visible(queue) == 300 - first, what="the crashed run's messages visible again")
    report = run_consumer(queue, RowConsumer(), store, DrainOptions(batch_size=50, max_messages=300,
                                                                   wait_seconds=0))
    assert report.counters["received"] == 300 - first
    assert sorted(stored(store)) == sorted(f"body {i}" for i in range(300)) and _left(queue) == 0
