"""The drain loop every queue consumer shares (DESIGN rule 2).

Receive (long poll, 10 a call) until a batch is full, hand the batch to `handle`, which
must commit everything it needs to DuckDB (including quarantine rows) before it
returns, and only then delete the batch from SQS. A crash before the delete leaves the
messages on the queue; `handle` is idempotent, so the redelivery changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class QueueMessage:
    sqs_message_id: str
    receipt_handle: str
    body: str
    receive_count: int = 1
    # When it first reached us, if earlier than now (a quarantine replay): age checks count from it.
    received_at: datetime | None = None
    # SQS string MessageAttributes (e.g. "Stripe-Signature")
    attributes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_sqs(cls, msg: dict) -> QueueMessage:
        attrs = msg.get("Attributes", {})
        return cls(msg["MessageId"], msg["ReceiptHandle"], msg.get("Body", ""),
                   int(attrs.get("ApproximateReceiveCount", 1)))


class Queue(Protocol):
    queue_name: str

    def receive(self, max_messages: int = 10, wait_seconds: int = 1) -> list[dict]: ...

    def delete(self, receipt_handles: list[str]) -> list[str]: ...


@dataclass
class DrainStats:
    received: int = 0
    deleted: int = 0
    delete_failures: int = 0
    batches: int = 0
    receive_calls: int = 0
    delete_calls: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def sqs_calls(self) -> int:
        return self.receive_calls + self.delete_calls


def drain(queue: Queue, handle: Callable[[list[QueueMessage]], None], *,
          max_messages: int = 10_000, max_seconds: float = 300.0, batch_size: int = 500,
          wait_seconds: int = 1, empty_polls_to_stop: int = 1) -> DrainStats:
    """Drain up to `max_messages` or `max_seconds`, in batches of `batch_size` messages."""
    stats = DrainStats()
    started = time.monotonic()
    empty_polls = 0
    batch: list[QueueMessage] = []
    seen: set[str] = set()

    def flush() -> None:
        if not batch:
            return
        handle(batch)
        handles = [m.receipt_handle for m in batch]
        failed = queue.delete(handles)
        stats.delete_calls += (len(handles) + 9) // 10
        stats.deleted += len(handles) - len(failed)
        stats.delete_failures += len(failed)
        stats.batches += 1
        batch.clear()

    while stats.received < max_messages and time.monotonic() - started < max_seconds:
        want = min(10, max_messages - stats.received)
        msgs = queue.receive(max_messages=want, wait_seconds=wait_seconds)
        stats.receive_calls += 1
        if not msgs:
            empty_polls += 1
            if empty_polls >= empty_polls_to_stop:
                break
            continue
        empty_polls = 0
        for raw in msgs:
            msg = QueueMessage.from_sqs(raw)
            if msg.sqs_message_id in seen:  # same message twice in one drain: keep the newest handle
                batch[:] = [m for m in batch if m.sqs_message_id != msg.sqs_message_id]
            seen.add(msg.sqs_message_id)
            batch.append(msg)
            stats.received += 1
        if len(batch) >= batch_size:
            flush()
    flush()
    stats.seconds = time.monotonic() - started
    return stats
