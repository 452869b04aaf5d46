"""Quarantine: a message that cannot be processed is kept with its raw body and reason (docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from pipelines.store.write import STR, arrow, insert, with_rows

if TYPE_CHECKING:
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


def storable(text: str) -> str:
    """`text` with lone surrogates written as escapes: DuckDB (UTF-8) cannot store them, and a
    queue body may carry them."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def quarantine(conn: duckdb.DuckDBPyConnection, items: Iterable[Quarantined]) -> int:
    """Insert, keeping the first reason for a message seen again (a redelivery)."""
    first: dict[str, Quarantined] = {}
    for q in items:
        first.setdefault(q.quarantine_id, q)
    if not first:
        return 0
    kept = list(first.values())
    insert(conn, "quarantine", arrow(
        quarantine_id=(STR, list(first)),
        source=(STR, [q.source for q in kept]),
        sqs_message_id=(STR, [q.sqs_message_id for q in kept]),
        raw_body=(STR, [storable(q.raw_body) for q in kept]),
        reason=(STR, [storable(q.reason) for q in kept]),
    ), on_conflict="(quarantine_id) DO NOTHING")
    return len(kept)


def pending(conn: duckdb.DuckDBPyConnection, source: str) -> list[tuple[str, str, str, datetime]]:
    """(quarantine_id, sqs_message_id, raw_body, quarantined_at) not yet replayed successfully, oldest first."""
    return conn.execute(
        "SELECT quarantine_id, sqs_message_id, raw_body, quarantined_at FROM quarantine "
        "WHERE source = ? AND (replay_result IS NULL OR replay_result <> 'ok') ORDER BY quarantined_at",
        [source],
    ).fetchall()


def mark_replayed(conn: duckdb.DuckDBPyConnection, results: Iterable[tuple[str, str]]) -> None:
    """results: (quarantine_id, 'ok' or the new reason)."""
    results = list(results)
    with_rows(conn, "UPDATE quarantine SET replayed_at = now(), replay_result = r.result FROM rows r "
                    "WHERE quarantine.quarantine_id = r.quarantine_id",
              arrow(quarantine_id=(STR, [q for q, _ in results]), result=(STR, [r for _, r in results])))
