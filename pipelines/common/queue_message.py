"""A received SQS message, and the queue interface the drain loop needs."""

from __future__ import annotations

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
    # SQS string MessageAttributes (e.g. "Stripe-Signature"); binary ones are left out.
    attributes: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def from_sqs(cls, msg: dict) -> QueueMessage:
        attrs = msg.get("Attributes", {})
        strings = {name: a["StringValue"] for name, a in (msg.get("MessageAttributes") or {}).items()
                   if isinstance(a, dict) and isinstance(a.get("StringValue"), str)}
        return cls(msg["MessageId"], msg["ReceiptHandle"], msg.get("Body", ""),
                   int(attrs.get("ApproximateReceiveCount", 1)), attributes=strings)


class Queue(Protocol):
    """What the drain needs of a queue. Optional, used when present: `supports_concurrent_calls`
    (True: its calls may run from several threads at once, so the drain overlaps them),
    `visibility_timeout() -> seconds` and `change_visibility(receipt_handles, seconds) -> refused`."""

    queue_name: str

    def receive(self, max_messages: int = 10, wait_seconds: int = 1) -> list[dict]: ...

    def delete(self, receipt_handles: list[str]) -> list[str]: ...
