"""Replay quarantined SES notifications after a fix (a new allow-list entry, a certificate,
a parser change). Each row is run through the same prepare/commit path as the queue; its
quarantine row records 'ok' or the new reason, in the same transaction as the events.
A replay comes hours or days after the message arrived: the SNS age limit counts to when it was
quarantined, and duplicates are looked for in the whole ledger."""

from __future__ import annotations

import duckdb

from pipelines.common.drain import QueueMessage
from pipelines.common.quarantine import mark_replayed, pending
from pipelines.email_delivery.ingest import IngestResult, Ingestor


def replay(conn: duckdb.DuckDBPyConnection, ingestor: Ingestor, limit: int = 10_000) -> tuple[IngestResult, int]:
    """Returns the ingest result and how many rows still fail."""
    rows = pending(conn, ingestor.source)[:limit]
    if not rows:
        return IngestResult(), 0
    prepared = ingestor.prepare(QueueMessage(sqs_id, "", raw, received_at=at) for _, sqs_id, raw, at in rows)
    results = [(qid, prepared.outcomes[sqs_id] or "ok") for qid, sqs_id, _, _ in rows]
    result = ingestor.commit(conn, prepared, write_quarantine=False, check_whole_ledger=True,
                             within=lambda c: mark_replayed(c, results))
    return result, sum(1 for _, r in results if r != "ok")
