"""Retention (ses_cleanup_schedule): Warehouse's rule, set-wise.

Messages still "sent" (Accepted) or "delivered" older than `final_days`, and every message
older than `all_days`, are deleted together with their events; orphan events older than
`all_days` go too. Bounced, soft-bounced and complained messages are what operators look
at, so they are kept until `all_days`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb


@dataclass(frozen=True)
class CleanupResult:
    messages: int
    events: int


def cleanup(conn: duckdb.DuckDBPyConnection, now: datetime, *, final_days: int = 14,
            all_days: int = 90) -> CleanupResult:
    final_cut, all_cut = now - timedelta(days=final_days), now - timedelta(days=all_days)
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(
            "CREATE OR REPLACE TEMP TABLE ses_doomed AS SELECT request_id, to_address, message_id "
            "FROM email_messages WHERE (status IN ('sent', 'delivered') AND created_at < ?) OR created_at < ?",
            [final_cut, all_cut])
        events = conn.execute(
            "DELETE FROM email_events WHERE message_id IN "
            "(SELECT message_id FROM ses_doomed WHERE message_id IS NOT NULL) "
            "OR (orphan AND received_at < ?)", [all_cut]).fetchone()[0]
        messages = conn.execute(
            "DELETE FROM email_messages m USING ses_doomed d "
            "WHERE m.request_id = d.request_id AND m.to_address = d.to_address").fetchone()[0]
        conn.execute("DROP TABLE ses_doomed")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return CleanupResult(messages, events)
