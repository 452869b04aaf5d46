"""Quarantine (DESIGN rule 3): a message that cannot be processed is kept with its raw body and reason."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by the SES verify workers, which need no DuckDB
    import duckdb


@dataclass(frozen=True)
class Quarantined:
    source: str
    sqs_message_id: str
    raw_body: str
    reason: str

    @property
    def quarantine_id(self) -> str:
        return f"{self.source}:{self.sqs_message_id}"


def quarantine(conn: duckdb.DuckDBPyConnection, items: Iterable[Quarantined]) -> int:
    """Insert, keeping the first reason for a message seen again (a redelivery)."""
    rows = [(q.quarantine_id, q.source, q.sqs_message_id, q.raw_body, q.reason) for q in items]
    if not rows:
        return 0
    conn.executemany(
        "INSERT INTO quarantine (quarantine_id, source, sqs_message_id, raw_body, reason) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (quarantine_id) DO NOTHING",
        rows,
    )
    return len(rows)


def pending(conn: duckdb.DuckDBPyConnection, source: str) -> list[tuple[str, str, str, datetime]]:
    """(quarantine_id, sqs_message_id, raw_body, quarantined_at) not yet replayed successfully, oldest first."""
    return conn.execute(
        "SELECT quarantine_id, sqs_message_id, raw_body, quarantined_at FROM quarantine "
        "WHERE source = ? AND (replay_result IS NULL OR replay_result <> 'ok') ORDER BY quarantined_at",
        [source],
    ).fetchall()


def mark_replayed(conn: duckdb.DuckDBPyConnection, results: Iterable[tuple[str, str]]) -> None:
    """results: (quarantine_id, 'ok' or the new reason)."""
    conn.executemany(
        "UPDATE quarantine SET replayed_at = now(), replay_result = ? WHERE quarantine_id = ?",
        [(r, qid) for qid, r in results],
    )
