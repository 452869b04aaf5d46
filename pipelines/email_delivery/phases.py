"""Where a run's time goes: milliseconds per phase, added to the batch's counters as `<phase>_ms`.

The ses-notifications consumer reports `verify_ms` (the drain thread verifying inline, or
waiting for the verify workers), `assemble_ms`, `apply_ms` (the status machine and building
the batch's tables) and `write_ms` (its DuckDB statements); the kit adds `receive_ms` and
`commit_ms`. They become run metadata with the other counters, and bench.ses_ingest prints them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from pipelines.common.counters import Counters


class PhaseTimer:
    """`with timer("write"): ...` adds the block's wall time to counters["write_ms"]. Without
    counters it times nothing (relink_orphans runs in another queue's transaction)."""

    def __init__(self, counters: Counters | None = None):
        self.counters = counters

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        if self.counters is None:
            yield
            return
        began = time.perf_counter()
        try:
            yield
        finally:
            self.counters[f"{phase}_ms"] += (time.perf_counter() - began) * 1000


UNTIMED = PhaseTimer()
