"""The drain loop every queue consumer shares (docs/architecture.md, "Runs are the consumers").

Receive (long poll, 10 a call) until a batch is full, or until its oldest message has been in
flight for a set share of the queue's visibility timeout; hand the batch to `handle`, which must
commit everything it needs to DuckDB (including quarantine rows) before it returns; only then
delete the batch from SQS. A crash before the delete leaves the messages on the queue; `handle`
is idempotent, so the redelivery changes nothing. Flushing by age keeps a slow queue from
redelivering messages that are still waiting in a batch (and deleting them would then fail).

A stop request (pipelines/common/stop.py) ends the loop before its next receive: the batch in
hand that `handle` has not taken is abandoned (left on the queue, redelivered after its
visibility timeout); a batch whose `handle` raises Stopped is not deleted either.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pipelines.common.counters import Counters
from pipelines.common.queue_message import Queue, QueueMessage
from pipelines.common.stop import Stopped, StopRequest

SQS_BATCH = 10


@dataclass(frozen=True)
class DrainOptions:
    max_messages: int = 10_000
    max_seconds: float = 300.0
    batch_size: int = 500
    wait_seconds: int = 1
    empty_polls_to_stop: int = 1
    # A batch is flushed once its oldest message has been in flight for this share of the
    # queue's visibility timeout (read from the queue when `visibility_timeout` is None).
    visibility_share: float = 0.5
    visibility_timeout: float | None = None


def visibility_timeout_of(queue: Queue) -> float | None:
    """The queue's VisibilityTimeout in seconds, if the queue can tell (SQSQueueResource can)."""
    read = getattr(queue, "visibility_timeout", None)
    return float(read()) if callable(read) else None


def drain(queue: Queue, handle: Callable[[list[QueueMessage]], None], options: DrainOptions = DrainOptions(),
          *, on_receive: Callable[[list[QueueMessage]], None] | None = None,
          stop: StopRequest | None = None) -> Counters:
    """Drain up to `max_messages` or `max_seconds`, or until `stop` is requested. `on_receive` sees
    each received message as it arrives (a consumer that prepares in worker processes starts on it then)."""
    stats = Counters(received=0, deleted=0, delete_failures=0, batches=0, receive_calls=0, delete_calls=0,
                     flushed_by_age=0)
    timeout = options.visibility_timeout if options.visibility_timeout is not None else visibility_timeout_of(queue)
    budget = options.visibility_share * timeout if timeout else None
    started = time.monotonic()
    empty_polls = 0
    batch: list[QueueMessage] = []
    oldest = 0.0          # when the receive that brought the batch's oldest message began
    last_receive = 0.0    # how long the latest receive took: the next may take as long
    seen: set[str] = set()

    def flush() -> bool:
        try:
            handle(batch)
        except Stopped:
            stats["stopped_in_batch"] += len(batch)
            batch.clear()
            return False
        handles = [m.receipt_handle for m in batch]
        failed = queue.delete(handles)
        stats["delete_calls"] += (len(handles) + SQS_BATCH - 1) // SQS_BATCH
        stats["deleted"] += len(handles) - len(failed)
        stats["delete_failures"] += len(failed)
        stats["batches"] += 1
        batch.clear()
        return True

    def stopping() -> bool:
        return stop is not None and stop.requested

    def too_old() -> bool:
        return bool(batch) and budget is not None and time.monotonic() - oldest + last_receive >= budget

    while stats["received"] < options.max_messages and time.monotonic() - started < options.max_seconds:
        if stopping():
            break
        if too_old():
            stats["flushed_by_age"] += 1
            if not flush():
                break
        wait = options.wait_seconds
        if batch and budget is not None:   # do not long-poll past the batch's deadline
            wait = max(0, min(wait, int(budget - (time.monotonic() - oldest) - last_receive)))
        want = min(SQS_BATCH, options.max_messages - stats["received"])
        began = time.monotonic()
        raw = queue.receive(max_messages=want, wait_seconds=wait)
        last_receive = time.monotonic() - began
        stats["receive_calls"] += 1
        if not raw:
            empty_polls += 1
            if empty_polls >= options.empty_polls_to_stop:
                break
            continue
        empty_polls = 0
        received = [QueueMessage.from_sqs(m) for m in raw]
        if on_receive is not None:
            on_receive(received)
        if not batch:
            oldest = began
        for msg in received:
            if msg.sqs_message_id in seen:  # same message twice in one drain: keep the newest handle
                batch[:] = [m for m in batch if m.sqs_message_id != msg.sqs_message_id]
            seen.add(msg.sqs_message_id)
            batch.append(msg)
            stats["received"] += 1
        if len(batch) >= options.batch_size and not flush():
            break
    if batch and stopping():
        stats["abandoned"] += len(batch)   # never committed: left on the queue
    elif batch:
        flush()
    if stopping():
        stats["stopped"] = 1
    return stats
