"""The one interface every email transport implements, and its two kinds of failure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class OutgoingEmail:
    sender: str
    recipient: str
    raw: bytes  # complete MIME message, headers included
    kind: str
    tags: dict[str, str] = field(default_factory=dict)
    message_id: str | None = None  # the Message-ID header's value, when the builder already knows it


class SendError(Exception):
    """Base: the transport did not accept the message."""


class TransientSendError(SendError):
    """Throttling, 4xx, dropped connection: retry with backoff."""


class PermanentSendError(SendError):
    """Rejected for good (SMTP 5xx, SES MessageRejected): record as failed, never retry."""


class EmailTransport(Protocol):
    def send(self, email: OutgoingEmail) -> str:
        """Send one message; return the provider's message id."""
        ...

    def max_send_rate(self) -> float | None:
        """Messages per second the provider allows, or None for no limit."""
        ...
