"""Retention (ses_cleanup_schedule): expired ledger messages go with their SES events.

Which messages expire is the dispatch ledger's rule (pipelines/email/ledger.py); this deletes
their events, and orphan events older than `all_days`, inside the caller's write transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from pipelines.email.ledger import delete_expired, mark_expired
from pipelines.store.write import changed


@dataclass(frozen=True)
class CleanupResult:
    messages: int
    events: int


def cleanup(conn: duckdb.DuckDBPyConnection, now: datetime, *, final_days: int = 14,
            all_days: int = 90) -> CleanupResult:
    expired = mark_expired(conn, now, final_days=final_days, all_days=all_days)
    events = changed(conn, conn.execute(
        f"DELETE FROM email_events WHERE message_id IN "
        f"(SELECT message_id FROM {expired} WHERE message_id IS NOT NULL) "
        "OR (orphan AND received_at < ?)", [now - timedelta(days=all_days)]))
    messages = delete_expired(conn)
    return CleanupResult(messages, events)
