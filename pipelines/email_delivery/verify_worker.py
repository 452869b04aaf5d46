"""What runs inside a verify worker process (parallel.PreparePool starts them).

Kept apart from parallel.py so a worker imports only examine.py and what it needs: no pyarrow,
DuckDB, pandas or Dagster. A spawned worker imports its task's module afresh, and on the
2-CPU machine those libraries made each worker ~190 MB instead of ~40 MB.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

from pipelines.common.queue_message import QueueMessage
from pipelines.common.sns.cert_store import CertStore
from pipelines.email_delivery.examine import Examiner, event_columns
from pipelines.common.sns.verify import SnsVerifier

_EXAMINER: Examiner | None = None


PR_SET_PDEATHSIG = 1          # linux/prctl.h
PARENT_POLL_SECONDS = 0.5


def init(topics: list[str], cert_dir: str | None, max_age_seconds: float, accept_raw: bool,
         parent_pid: int | None = None) -> None:
    global _EXAMINER
    if parent_pid is not None:
        exit_with_parent(parent_pid)
    _EXAMINER = Examiner(SnsVerifier(topics, CertStore(cert_dir), max_age_seconds), accept_raw=accept_raw)


def exit_with_parent(parent_pid: int) -> None:
    """End this worker when the run that started it dies, even by kill -9 (no shutdown reaches
    the pool then, and an orphan worker would keep the resource tracker alive with it).

    On Linux the kernel sends SIGTERM at the parent's death (PR_SET_PDEATHSIG; the pool starts
    its workers from the thread that creates it, which lives as long as the run). Everywhere, a
    daemon thread also watches for the parent pid to change, which is how a re-parented orphan
    shows."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass   # the watch thread below still applies
    if os.getppid() != parent_pid:   # died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def ready() -> int:
    return os.getpid()


def examine_chunk(messages: list[tuple]) -> tuple[list[tuple], list[list]]:
    """Messages come and per-message results go as plain tuples (they pickle twice as fast as
    dataclasses); the chunk's events go back as one list per column (examine.event_columns)."""
    assert _EXAMINER is not None, "verify_worker.init has not run in this process"
    examined, events = _EXAMINER.examine_all(QueueMessage(sqs_id, "", body, received_at=at)
                                             for sqs_id, body, at in messages)
    return [(e.sqs_message_id, e.n_events, e.controls, e.reason) for e in examined], event_columns(events)
