"""What runs inside a verify worker process (parallel.PreparePool starts them).

Kept apart from parallel.py so a worker imports only examine.py and what it needs: no pyarrow,
DuckDB, pandas or Dagster. A spawned worker imports its task's module afresh, and on the
2-CPU machine those libraries made each worker ~190 MB instead of ~40 MB.
"""

from __future__ import annotations

import os

from pipelines.common.queue_message import QueueMessage
from pipelines.common.sns.cert_store import CertStore
from pipelines.email_delivery.examine import Examiner, event_columns
from pipelines.common.sns.verify import SnsVerifier

_EXAMINER: Examiner | None = None


def init(topics: list[str], cert_dir: str | None, max_age_seconds: float, accept_raw: bool) -> None:
    global _EXAMINER
    _EXAMINER = Examiner(SnsVerifier(topics, CertStore(cert_dir), max_age_seconds), accept_raw=accept_raw)


def ready() -> int:
    return os.getpid()


def examine_chunk(messages: list[tuple]) -> tuple[list[tuple], list[list]]:
    """Messages come and per-message results go as plain tuples (they pickle twice as fast as
    dataclasses); the chunk's events go back as one list per column (examine.event_columns)."""
    assert _EXAMINER is not None, "verify_worker.init has not run in this process"
    examined, events = _EXAMINER.examine_all(QueueMessage(sqs_id, "", body, received_at=at)
                                             for sqs_id, body, at in messages)
    return [(e.sqs_message_id, e.n_events, e.controls, e.reason) for e in examined], event_columns(events)
