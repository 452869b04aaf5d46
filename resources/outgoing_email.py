"""What a transport resource is handed (one complete MIME message) and the two ways it can fail.

Plain data and exceptions, no domain logic: the transports in resources/ raise these and
pipelines/email/ catches them. The interface a transport satisfies is declared by the domain
that needs it (pipelines/email/transport.py), so resources never import pipelines.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
