"""Keeping the garbage collector off the drain's long-lived heap.

A drain allocates many short-lived objects per notification (tuples from DuckDB rows, status
machine steps), so the collector runs often, and each full collection traverses every object
the process holds: Dagster's, DuckDB's and pyarrow's modules. Frozen objects are skipped.
"""

from __future__ import annotations

import gc

_frozen = False


def freeze_long_lived() -> None:
    """Collect what is garbage now, then freeze everything still alive (gc.freeze), once per
    process: later full collections traverse only what was allocated since. Frozen objects are
    still freed by reference counting; only a reference cycle among them is never collected, so
    freezing once (a run worker builds one consumer) keeps what a long-lived process can lose small."""
    global _frozen
    if _frozen:
        return
    gc.collect()
    gc.freeze()
    _frozen = True
