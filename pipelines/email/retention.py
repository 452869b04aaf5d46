"""Retention of the dispatch ledger (email_messages), Warehouse's rule, set-wise.

Messages still "sent" (Accepted) or "delivered" older than `final_days`, and every message
older than `all_days`, expire. Bounced, soft-bounced and complained messages are what
operators look at, so they are kept until `all_days`. Other domains delete what hangs off
an expired message (its SES events) from the same temp table before the messages go.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

EXPIRED = "email_messages_expired"  # temp table: request_id, to_address, message_id


def mark_expired(conn: duckdb.DuckDBPyConnection, now: datetime, *, final_days: int, all_days: int) -> str:
    """Fill the temp table EXPIRED with the messages past retention; returns its name."""
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {EXPIRED} AS SELECT request_id, to_address, message_id "
        "FROM email_messages WHERE (status IN ('sent', 'delivered') AND created_at < ?) OR created_at < ?",
        [now - timedelta(days=final_days), now - timedelta(days=all_days)])
    return EXPIRED


def delete_expired(conn: duckdb.DuckDBPyConnection) -> int:
    """Delete the messages in EXPIRED, then drop it; returns how many were deleted."""
    deleted = conn.execute(
        f"DELETE FROM email_messages m USING {EXPIRED} d "
        "WHERE m.request_id = d.request_id AND m.to_address = d.to_address").fetchone()[0]
    conn.execute(f"DROP TABLE {EXPIRED}")
    return deleted
