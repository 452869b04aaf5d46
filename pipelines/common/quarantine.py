"""Quarantine: a message that cannot be processed is kept with its body and reason, both redacted
(pipelines/common/redaction.py), never verbatim when they hold a secret (docs/architecture.md).

Every quarantine row is written here, and every one is redacted here: no consumer can opt out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from pipelines.common.redaction import DEFAULT_RULES, REDACTED, RedactionRules
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


def quarantine(conn: duckdb.DuckDBPyConnection, items: Iterable[Quarantined],
               rules: RedactionRules = DEFAULT_RULES) -> int:
    """Insert, keeping the first reason for a message seen again (a redelivery). The body is
    redacted by `rules` (the consumer's: its secret field names and verbatim paths); the reason
    loses every value masked in its body and every secret-shaped value."""
    first: dict[str, Quarantined] = {}
    for q in items:
        first.setdefault(q.quarantine_id, q)
    if not first:
        return 0
    kept = list(first.values())
    bodies, reasons = [], []
    for q in kept:
        body = rules.body(q.raw_body)
        bodies.append(body.text)
        reasons.append(rules.text(q.reason, body.found, pairs=False))
    insert(conn, "quarantine", arrow(
        quarantine_id=(STR, list(first)),
        source=(STR, [q.source for q in kept]),
        sqs_message_id=(STR, [q.sqs_message_id for q in kept]),
        raw_body=(STR, bodies),
        reason=(STR, reasons),
    ), on_conflict="(quarantine_id) DO NOTHING")
    return len(kept)


# Added to a replay's result when the row fails again and its kept body was redacted: a signature
# over the original bytes (a Stripe webhook, an SNS message) cannot verify the masked copy.
REDACTED_COPY = "(replayed from the quarantined copy, in which secrets were masked)"


def replay_result(raw_body: str, result: str) -> str:
    if result != "ok" and REDACTED in raw_body:
        return f"{result} {REDACTED_COPY}"
    return result


def pending(conn: duckdb.DuckDBPyConnection, source: str) -> list[tuple[str, str, str, datetime]]:
    """(quarantine_id, sqs_message_id, raw_body, quarantined_at) not yet replayed successfully, oldest first."""
    return conn.execute(
        "SELECT quarantine_id, sqs_message_id, raw_body, quarantined_at FROM quarantine "
        "WHERE source = ? AND (replay_result IS NULL OR replay_result <> 'ok') ORDER BY quarantined_at, quarantine_id",
        [source],
    ).fetchall()


def mark_replayed(conn: duckdb.DuckDBPyConnection, results: Iterable[tuple[str, str]],
                  rules: RedactionRules = DEFAULT_RULES) -> None:
    """results: (quarantine_id, 'ok' or the new reason)."""
    results = [(q, rules.text(r, pairs=False)) for q, r in results]
    with_rows(conn, "UPDATE quarantine SET replayed_at = now(), replay_result = r.result FROM rows r "
                    "WHERE quarantine.quarantine_id = r.quarantine_id",
              arrow(quarantine_id=(STR, [q for q, _ in results]), result=(STR, [r for _, r in results])))
