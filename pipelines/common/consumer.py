"""The consumer kit: what a queue consumer implements, and the one loop that runs it.

A consumer subclasses QueueConsumer. It prepares a batch without touching the database (parse,
verify, validate; a message it cannot accept is refused: `prepared.refuse(...)`, a quarantine
row with a reason) and commits a prepared batch inside one transaction the kit opens; a message
that commit finds it cannot accept is refused the same way (late quarantine). The kit writes the
quarantine rows, redacted (pipelines/common/redaction.py), in that same transaction, commits, runs
the consumer's after_commit (side effects such as sending email, which open their own
transactions), and only then lets the drain delete the batch from SQS. Every other hook does
nothing unless the consumer overrides it.

`run_consumer` is what the Dagster op and the benchmarks both call. docs/architecture.md
explains the rules it keeps.

Second line of defence (a consumer should refuse bad input, never raise; this is for bugs):
- prepare raises for a batch: the batch is prepared and committed message by message; a
  message whose prepare raises is quarantined as `internal error: <ExceptionType>`;
- commit raises: the transaction is rolled back and the batch is committed message by message;
  a message whose commit still raises is quarantined the same way.
Only when even that quarantine write fails does the run fail. Tracebacks are logged without
the exception's message, which could quote a secret from the body.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from pipelines.common.counters import Counters
from pipelines.common.drain import DrainOptions, drain
from pipelines.common.quarantine import Quarantined, mark_replayed, pending, quarantine, replay_result
from pipelines.common.queue_message import Queue, QueueMessage
from pipelines.common.redaction import DEFAULT_RULES, RedactionRules
from pipelines.common.stop import Stopped, StopRequest

if TYPE_CHECKING:
    import duckdb

    from pipelines.store.store import Store

_log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A prepared batch; every consumer's prepared batch subclasses this."""
    quarantined: list[Quarantined] = field(default_factory=list)
    # sqs_message_id -> None (accepted) or its quarantine reason
    outcomes: dict[str, str | None] = field(default_factory=dict)

    def accept(self, sqs_message_id: str) -> None:
        self.outcomes[sqs_message_id] = None

    def refuse(self, source: str, sqs_message_id: str, body: str, reason: str) -> None:
        """Quarantine this message (in prepare, or late, in commit): the kit writes the row, redacted,
        in the batch's transaction; a replay records `reason` as the row's result."""
        self.quarantined.append(Quarantined(source, sqs_message_id, body, reason))
        self.outcomes[sqs_message_id] = reason


class QueueConsumer(ABC):
    """What the kit runs. `prepare` and `commit` are the consumer's; every other hook does nothing
    unless the consumer overrides it. A consumer holding processes or threads releases them in
    `close` (the op uses it as a context manager)."""

    source: str = ""   # the queue's name and its quarantine rows' source, e.g. "stripe-events"
    # Adds to the kit's redaction (never removes from it): the consumer's own secret field names,
    # and the JSON paths replay needs verbatim to verify a message (message signatures).
    redaction: RedactionRules = DEFAULT_RULES

    @abstractmethod
    def prepare(self, messages: list[QueueMessage]) -> Prepared:
        """Pure: parse, verify, validate. Refuses (prepared.refuse); never raises."""

    @abstractmethod
    def commit(self, conn: duckdb.DuckDBPyConnection, prepared: Prepared) -> Counters:
        """Write the prepared batch, inside the transaction the kit opened."""

    def after_commit(self, store: Store, prepared: Prepared) -> Counters:
        """Side effects after the commit, before the SQS delete (sending email, dispatching notices)."""
        return Counters()

    def on_receive(self, messages: list[QueueMessage]) -> None:
        """Sees messages as they arrive (to start preparing early): called from the receiver thread
        that got them, one call at a time, while the drain thread may still be preparing or
        committing an earlier batch."""

    def request_stop(self) -> None:
        """A stop was requested (pipelines/common/stop.py): stop side effects not yet handed out;
        after_commit then records what was done and raises Stopped."""

    def run_metadata(self) -> dict[str, object]:
        """Facts about the run, added to the op's output and metadata."""
        return {}

    def close(self) -> None:
        """Release processes, threads or connections the consumer holds."""

    def __enter__(self) -> QueueConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def internal_error(exc: BaseException) -> str:
    return f"internal error: {type(exc).__name__}"


def _log_internal(log: Any, what: str, exc: BaseException) -> None:
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error(f"{what}: {internal_error(exc)}\nTraceback (most recent call last):\n{frames}"
              f"{type(exc).__name__} (message withheld)")


def _commit(store: Store, consumer: QueueConsumer, prepared: Prepared) -> Counters:
    with store.transaction() as conn:
        counters = consumer.commit(conn, prepared)
        began = time.perf_counter()
        counters["quarantined"] += quarantine(conn, prepared.quarantined, consumer.redaction)
    # commit_ms: the quarantine rows and COMMIT (and closing the connection, unless the store holds it)
    counters["commit_ms"] += (time.perf_counter() - began) * 1000
    return counters


def process_batch(store: Store, consumer: QueueConsumer, messages: list[QueueMessage], log: Any = None) -> Counters:
    """Prepare, commit (with the batch's quarantine rows) and run after_commit for one batch."""
    log = log or _log
    counters = Counters(messages=len(messages), quarantined=0)
    try:
        prepared = consumer.prepare(messages)
    except Exception as exc:  # noqa: BLE001 - second line of defence
        _log_internal(log, f"{consumer.source}: preparing a batch of {len(messages)}", exc)
        counters.update(_one_by_one(store, consumer, messages, log))
        return counters
    try:
        counters.update(_commit(store, consumer, prepared))
    except Exception as exc:  # noqa: BLE001 - second line of defence; the transaction rolled back
        _log_internal(log, f"{consumer.source}: committing a batch of {len(messages)}", exc)
        counters.update(_one_by_one(store, consumer, messages, log))
        return counters
    try:
        counters.update(consumer.after_commit(store, prepared))
    except Stopped as stopped:
        counters.update(stopped.counters)
        stopped.counters = counters
        raise
    return counters


def _one_by_one(store: Store, consumer: QueueConsumer, messages: list[QueueMessage], log: Any) -> Counters:
    counters = Counters(one_by_one=len(messages))
    for msg in messages:
        try:
            prepared = consumer.prepare([msg])
        except Exception as exc:  # noqa: BLE001
            _log_internal(log, f"{consumer.source}: preparing message {msg.sqs_message_id}", exc)
            reason = internal_error(exc)
        else:
            try:
                counters.update(_commit(store, consumer, prepared))
            except Exception as exc:  # noqa: BLE001
                _log_internal(log, f"{consumer.source}: committing message {msg.sqs_message_id}", exc)
                reason = internal_error(exc)
            else:
                counters.update(consumer.after_commit(store, prepared))
                continue
        # If even this fails, the run fails and the message stays on the queue.
        with store.transaction() as conn:
            quarantine(conn, [Quarantined(consumer.source, msg.sqs_message_id, msg.body, reason)],
                       consumer.redaction)
        counters["quarantined"] += 1
        counters["internal_errors"] += 1
    return counters


@dataclass
class RunReport:
    counters: Counters
    seconds: float

    @property
    def stopped(self) -> bool:
        """The run ended on a stop request (signal, termination), not on an empty queue or its limits."""
        return bool(self.counters["stopped"])

    @property
    def sqs_calls(self) -> int:
        return self.counters["receive_calls"] + self.counters["delete_calls"] + self.counters["visibility_calls"]

    def as_metadata(self) -> dict[str, int | float]:
        return {**self.counters.as_metadata(), "sqs_calls": self.sqs_calls, "seconds": round(self.seconds, 3)}


def run_consumer(queue: Queue, consumer: QueueConsumer, store: Store, options: DrainOptions = DrainOptions(),
                 log: Any = None, stop: StopRequest | None = None) -> RunReport:
    """Drain `queue` through `consumer` into `store`: the one entry the op and the benchmarks call.
    `stop`: once requested, the drain ends cleanly (pipelines/common/stop.py)."""
    started = time.monotonic()
    total = Counters()
    if stop is not None:
        stop.on_request(consumer.request_stop)

    def handle(batch: list[QueueMessage]) -> None:
        try:
            total.update(process_batch(store, consumer, batch, log))
        except Stopped as stopped:
            total.update(stopped.counters)
            raise

    total.update(drain(queue, handle, options, on_receive=consumer.on_receive, stop=stop))
    return RunReport(total, time.monotonic() - started)


REPLAY_CHUNK = 500


def replay_quarantine(store: Store, consumer: QueueConsumer, limit: int = 10_000, log: Any = None) -> Counters:
    """Run quarantined rows of the consumer's source through it again, after a fix. Each row
    records 'ok' or its new reason, in the same transaction as what it wrote. The messages carry
    received_at = when they were quarantined, so age checks count to then."""
    with store.transaction() as conn:
        rows = pending(conn, consumer.source)[:limit]
    counters = Counters(messages=len(rows), still_failing=0)
    log = log or _log
    # In chunks: each commits on its own (short transactions) and the log shows how far it got.
    for start in range(0, len(rows), REPLAY_CHUNK):
        counters.update(_replay(store, consumer, rows[start:start + REPLAY_CHUNK], log))
        log.info(f"{consumer.source}: replayed {min(start + REPLAY_CHUNK, len(rows)):,} of {len(rows):,} "
                 f"quarantined rows, {counters['still_failing']:,} still failing")
    return counters


def _replay(store: Store, consumer: QueueConsumer, rows: list[tuple], log: Any) -> Counters:
    messages = [QueueMessage(sqs_id, "", raw, received_at=at) for _, sqs_id, raw, at in rows]
    try:
        prepared = consumer.prepare(messages)
        with store.transaction() as conn:
            counters = consumer.commit(conn, prepared)
            # after commit: a late refusal sets its message's outcome there
            results = [(qid, replay_result(raw, prepared.outcomes.get(sqs_id) or "ok"))
                       for qid, sqs_id, raw, _ in rows]
            mark_replayed(conn, results, consumer.redaction)
    except Exception as exc:  # noqa: BLE001 - second line of defence, as for the queue
        _log_internal(log, f"{consumer.source}: replaying {len(rows)} quarantined row(s)", exc)
        if len(rows) > 1:
            counters = Counters()
            for row in rows:
                counters.update(_replay(store, consumer, [row], log))
            return counters
        with store.transaction() as conn:
            mark_replayed(conn, [(rows[0][0], replay_result(rows[0][2], internal_error(exc)))])
        return Counters(still_failing=1, internal_errors=1)
    counters.update(consumer.after_commit(store, prepared))
    counters["still_failing"] += sum(1 for _, r in results if r != "ok")
    return counters
