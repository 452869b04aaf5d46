"""SQL behind the email_sends_daily asset and its checks (Dagster-free, for tests)."""

from __future__ import annotations

import duckdb

from pipelines.email.skip_rules import REASONS
from pipelines.email.ledger import MessageStatus as S
from pipelines.email.tables import skipped_column as _col
from pipelines.store.vocab import sql_list


def materialize(conn: duckdb.DuckDBPyConnection) -> int:
    """(Re)build email_sends_daily: one row per UTC day and kind, inside the caller's write
    transaction. Returns the row count."""
    by_reason = "".join(f"count(*) FILTER (WHERE status = $skipped AND skip_reason = '{r}') AS {_col(r)}, "
                        for r in REASONS)
    conn.execute("DELETE FROM email_sends_daily")
    conn.execute(f"""
        INSERT INTO email_sends_daily
        SELECT CAST(timezone('UTC', created_at) AS DATE) AS day, kind,
               count(*) FILTER (WHERE status IN ({sql_list(S.ACCEPTED)})) AS sent,
               count(*) FILTER (WHERE status = $skipped) AS skipped,
               {by_reason}
               count(*) FILTER (WHERE status = $failed) AS failed,
               count(*) FILTER (WHERE status = $pending) AS pending
        FROM email_messages GROUP BY ALL ORDER BY day, kind
    """, {"skipped": S.SKIPPED, "failed": S.FAILED, "pending": S.PENDING})
    return conn.execute("SELECT count(*) FROM email_sends_daily").fetchone()[0]


def totals(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    cols = ["sent", "skipped", *(_col(r) for r in REASONS), "failed", "pending"]
    row = conn.execute("SELECT " + ", ".join(f"coalesce(sum({c}), 0)::BIGINT" for c in cols)
                       + " FROM email_sends_daily").fetchone()
    return dict(zip(cols, (int(v) for v in row), strict=True))


def ledger_mismatch(conn: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(rows in the ledger, rows the daily table accounts for); equal when consistent."""
    ledger = conn.execute("SELECT count(*) FROM email_messages").fetchone()[0]
    t = totals(conn)
    by_reason = sum(t[_col(r)] for r in REASONS)
    counted = t["sent"] + t["skipped"] + t["failed"] + t["pending"]
    # every skipped row must carry a known reason
    return int(ledger), int(counted if by_reason == t["skipped"] else -1)


def stuck_pending(conn: duckdb.DuckDBPyConnection, older_than_minutes: int = 60) -> int:
    """Pending rows older than this: claimed by a run that never recorded an outcome."""
    return int(conn.execute(
        "SELECT count(*) FROM email_messages WHERE status = ? "
        f"AND created_at < now() - INTERVAL {int(older_than_minutes)} MINUTE", [S.PENDING]).fetchone()[0])


def failure_rate(conn: duckdb.DuckDBPyConnection, days: int = 1) -> tuple[float, int, int]:
    """(failed / (sent + failed), failed, sent) over the last `days` days of the daily table."""
    failed, sent = conn.execute(
        "SELECT coalesce(sum(failed), 0), coalesce(sum(sent), 0) FROM email_sends_daily "
        f"WHERE day > CAST(timezone('UTC', now()) AS DATE) - {int(days)}").fetchone()
    total = failed + sent
    return (failed / total if total else 0.0), int(failed), int(sent)
