"""Keeping the garbage collector off the drain's long-lived heap.

A drain allocates many short-lived objects per notification (tuples from DuckDB rows, status
machine steps), so the collector runs often, and each full collection traverses every object
the process holds: Dagster's, DuckDB's and pyarrow's modules. Frozen objects are skipped.
"""

from __future__ import annotations

import gc


def freeze_long_lived() -> None:
    """Collect what is garbage now, then freeze everything still alive (gc.freeze): later full
    collections traverse only what the drain allocates. Objects alive now that become garbage
    later are not reclaimed, so call it once the run's long-lived objects exist."""
    gc.collect()
    gc.freeze()
