"""A DuckDB connection reused across drain batches for a bounded time.

Opening and closing per batch costs a checkpoint each time (most of the write cost at 5,000
notifications a batch); holding the file for a whole run would lock ad-hoc readers out for
minutes. So a run keeps one connection for at most `hold_seconds`, then closes it between
batches, and readers (DuckDBResource retries on the lock) get in.

The connection runs DuckDB on one thread: a batch's statements are small, so more threads
mostly add scheduling overhead (~20% of the write time measured), and the verify workers
want the other cores.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

import duckdb

from resources.duckdb import DuckDBResource


class HeldConnection:
    def __init__(self, db: DuckDBResource, hold_seconds: float = 10.0):
        self.db = db
        self.hold_seconds = hold_seconds
        self._stack: ExitStack | None = None
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._opened = 0.0
        self.opens = 0

    def get(self) -> duckdb.DuckDBPyConnection:
        if self._conn is not None and time.monotonic() - self._opened >= self.hold_seconds:
            self.close()
        if self._conn is None:
            self._stack = ExitStack()
            self._conn = self._stack.enter_context(self.db.connect(config={"threads": 1}))
            self._opened = time.monotonic()
            self.opens += 1
        return self._conn

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack = self._conn = None

    def __enter__(self) -> HeldConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
