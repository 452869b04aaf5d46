"""Reporting over email_messages and email_events: the current-status view, the daily
delivery table, the trailing-window reputation and SES's thresholds for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from pipelines.email.ledger import MessageStatus as S
from pipelines.email_delivery.vocab import HARD_BOUNCE_TYPES, SOFT_BOUNCE_TYPES
from pipelines.store.vocab import sql_list

# SES's own review thresholds (bounce rate: hard bounces / sends; complaint rate: complaints / sends).
BOUNCE_WARN, BOUNCE_FAIL = 0.05, 0.10
COMPLAINT_WARN, COMPLAINT_FAIL = 0.001, 0.005

# Per SES message: which outcomes its (non-orphan) events report.
_OUTCOMES = f"""
    SELECT message_id,
           bool_or(event_type = 'Delivery') AS delivered,
           bool_or(event_type = 'Bounce' AND bounce_type IN ({sql_list(HARD_BOUNCE_TYPES)})) AS hard_bounced,
           bool_or(event_type = 'Bounce' AND bounce_type IN ({sql_list(SOFT_BOUNCE_TYPES)})) AS soft_bounced,
           bool_or(event_type = 'Complaint') AS complained
    FROM email_events WHERE NOT orphan GROUP BY message_id
"""
_SENT = f"""
    SELECT message_id, kind, coalesce(sent_at, created_at) AS sent_at
    FROM email_messages
    WHERE message_id IS NOT NULL AND status NOT IN ({sql_list(S.NOT_ACCEPTED)})
"""

def email_status_counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Messages per status in the email_status view (pipelines/email_delivery/tables.py)."""
    return dict(conn.execute("SELECT status, count(*) FROM email_status GROUP BY status ORDER BY status").fetchall())


def refresh_delivery_daily(conn: duckdb.DuckDBPyConnection) -> int:
    """Rebuild email_delivery_daily inside the caller's write transaction; returns its row count."""
    conn.execute("DELETE FROM email_delivery_daily")
    conn.execute(f"""
        INSERT INTO email_delivery_daily
        SELECT CAST(timezone('UTC', s.sent_at) AS DATE) AS day, s.kind,
               count(*) AS sent,
               count(*) FILTER (WHERE o.delivered) AS delivered,
               count(*) FILTER (WHERE o.hard_bounced) AS hard_bounced,
               count(*) FILTER (WHERE o.soft_bounced) AS soft_bounced,
               count(*) FILTER (WHERE o.complained) AS complained,
               count(*) FILTER (WHERE o.delivered) / count(*) AS delivery_rate,
               count(*) FILTER (WHERE o.hard_bounced) / count(*) AS bounce_rate,
               count(*) FILTER (WHERE o.soft_bounced) / count(*) AS soft_bounce_rate,
               count(*) FILTER (WHERE o.complained) / count(*) AS complaint_rate
        FROM ({_SENT}) s LEFT JOIN ({_OUTCOMES}) o USING (message_id)
        GROUP BY ALL ORDER BY day, kind""")
    return conn.execute("SELECT count(*) FROM email_delivery_daily").fetchone()[0]


@dataclass(frozen=True)
class Reputation:
    computed_at: datetime
    window_days: int
    sent: int
    hard_bounces: int
    complaints: int

    @property
    def bounce_rate(self) -> float:
        return self.hard_bounces / self.sent if self.sent else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sent if self.sent else 0.0


def compute_reputation(conn: duckdb.DuckDBPyConnection, now: datetime, window_days: int = 7) -> Reputation:
    sent, hard, complaints = conn.execute(f"""
        SELECT count(*), count(*) FILTER (WHERE o.hard_bounced), count(*) FILTER (WHERE o.complained)
        FROM ({_SENT}) s LEFT JOIN ({_OUTCOMES}) o USING (message_id)
        WHERE s.sent_at >= ?""", [now - timedelta(days=window_days)]).fetchone()
    rep = Reputation(now, window_days, sent, hard, complaints)
    conn.execute("INSERT INTO ses_reputation (computed_at, window_days, sent, hard_bounces, complaints, "
                 "bounce_rate, complaint_rate) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                 [now, window_days, sent, hard, complaints, rep.bounce_rate, rep.complaint_rate])
    return rep


def grade(rate: float, warn: float, fail: float) -> str:
    """'ok', 'warn' (at or over warn) or 'fail' (at or over fail)."""
    if rate >= fail:
        return "fail"
    if rate >= warn:
        return "warn"
    return "ok"
