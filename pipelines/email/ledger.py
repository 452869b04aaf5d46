"""email_messages, dispatch's outbox ledger: the public face of what email dispatch owns.

Email dispatch owns the table (declared in tables.py, written by the email-requests consumer),
its status vocabulary and its retention. Delivery tracking (pipelines/email_delivery/) moves
statuses on from `sent` and deletes expired messages with their events; it uses this module and
no other part of pipelines/email/. Imports run one way only: email_delivery -> email.ledger.

A notification can overtake its send's record, so delivery needs to hear when message ids are
recorded. Dispatch does not know delivery: its consumer takes a `MessageIdsRecorded` hook and
calls it inside the transaction that records them; the code location (pipelines/definitions.py)
hands it delivery's re-linking of orphan events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar, Protocol

import duckdb

from pipelines.store.dialect import DUCKDB, dialect_of
from pipelines.store.vocab import sql_list
from pipelines.store.write import changed

EMAIL_MESSAGES = "email_messages"   # the table, and its asset key


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

    ACCEPTED: ClassVar[tuple[MessageStatus, ...]]        # the provider accepted the message
    NOT_ACCEPTED: ClassVar[tuple[MessageStatus, ...]]    # it never reached the provider
    RETAINED_SHORT: ClassVar[tuple[MessageStatus, ...]]  # kept `final_days`; the others `all_days`


S = MessageStatus
S.ACCEPTED = (S.SENT, S.DELIVERED, S.BOUNCED, S.SOFT_BOUNCED, S.COMPLAINED)
S.NOT_ACCEPTED = (S.PENDING, S.SKIPPED, S.FAILED)
S.RETAINED_SHORT = (S.SENT, S.DELIVERED)
assert set(S.ACCEPTED) | set(S.NOT_ACCEPTED) == set(S) and not set(S.ACCEPTED) & set(S.NOT_ACCEPTED)


class MessageIdsRecorded(Protocol):
    """Called inside the transaction that writes provider message ids onto email_messages rows.
    `received_since`: nothing about these messages can have arrived before it (None: unknown).
    Returns counters, added to the run's."""

    def __call__(self, conn: duckdb.DuckDBPyConnection, message_ids: Iterable[str],
                 received_since: datetime | None) -> Mapping[str, int]: ...


# ---- retention (Warehouse's rule, set-wise) ---------------------------------------------------
# Messages still "sent" (Accepted) or "delivered" older than `final_days`, and every message older
# than `all_days`, expire. Bounced, soft-bounced and complained messages are what operators look
# at, so they are kept until `all_days`. Delivery deletes what hangs off an expired message (its
# SES events) from the same temp table before the messages go, in one transaction.

EXPIRED = "email_messages_expired"  # temp table: request_id, to_address, message_id


def mark_expired(conn: duckdb.DuckDBPyConnection, now: datetime, *, final_days: int, all_days: int) -> str:
    """Fill the temp table EXPIRED with the messages past retention; returns its name."""
    if dialect_of(conn) is DUCKDB:
        create = f"CREATE OR REPLACE TEMP TABLE {EXPIRED}"
    else:   # PostgreSQL cannot replace a table in one statement
        conn.execute(f"DROP TABLE IF EXISTS pg_temp.{EXPIRED}")
        create = f"CREATE TEMP TABLE {EXPIRED}"
    conn.execute(
        f"{create} AS SELECT request_id, to_address, message_id "
        f"FROM {EMAIL_MESSAGES} WHERE (status IN ({sql_list(S.RETAINED_SHORT)}) AND created_at < ?) "
        "OR created_at < ?",
        [now - timedelta(days=final_days), now - timedelta(days=all_days)])
    return EXPIRED


def delete_expired(conn: duckdb.DuckDBPyConnection) -> int:
    """Delete the messages in EXPIRED, then drop it; returns how many were deleted."""
    deleted = changed(conn, conn.execute(
        f"DELETE FROM {EMAIL_MESSAGES} m USING {EXPIRED} d "
        "WHERE m.request_id = d.request_id AND m.to_address = d.to_address"))
    conn.execute(f"DROP TABLE {EXPIRED}")
    return deleted
