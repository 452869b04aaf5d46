"""The closed vocabulary of email_messages.status, shared by dispatch and delivery tracking."""

from __future__ import annotations

from enum import StrEnum


class MessageStatus(StrEnum):
    # Dispatch's own: claimed before the transport call, then its outcome (or skipped at claim).
    PENDING = "pending"
    SKIPPED = "skipped"
    FAILED = "failed"
    SENT = "sent"                 # accepted by the provider (Warehouse's "Accepted")
    # Set by SES notifications (pipelines/email_delivery/status_machine.py).
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    SOFT_BOUNCED = "soft-bounced"
    COMPLAINED = "complained"


S = MessageStatus
# Statuses of a message the provider accepted; the others never reached it.
ACCEPTED = (S.SENT, S.DELIVERED, S.BOUNCED, S.SOFT_BOUNCED, S.COMPLAINED)
NOT_ACCEPTED = (S.PENDING, S.SKIPPED, S.FAILED)
