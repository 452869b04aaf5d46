"""Store: the one way to write and the one way to read the DuckDB file.

    with store.transaction() as conn:   # write: everything inside commits together or not at all
    with store.read() as conn:          # read: one consistent snapshot; a write in it raises

Every asset, check, job and consumer goes through these two; `Store(resource.connect)` makes a
store from the DuckDB resource. Nothing else opens a connection or a transaction.

By default (`hold_seconds=0`) every transaction opens its own connection and closes it at
COMMIT, so a run holds DuckDB's file lock only while it commits: never while it receives from
SQS, sends email or waits on a send rate. Ad-hoc readers and the other queues' runs take their
turns between commits. Reopening costs ~60-90 ms a transaction on the demo file (open plus the
checkpoint at close; docs/operations.md, "Ad-hoc queries"), small next to a batch.

`hold_seconds > 0` keeps one connection across consecutive transactions for at most that long
(a benchmark that wants the file to itself).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager

import duckdb

from pipelines.store.transaction import transaction

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


class Store:
    def __init__(self, connect: Connect, hold_seconds: float = 0.0):
        self.connect = connect
        self.hold_seconds = hold_seconds
        self._stack: ExitStack | None = None
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._opened = 0.0
        self.opens = 0
        self.open_seconds = 0.0     # time spent opening and closing connections (benchmarks)

    @classmethod
    def over(cls, conn: duckdb.DuckDBPyConnection) -> Store:
        """A store on a connection the caller owns and closes (tests, one-off scripts)."""
        @contextmanager
        def borrowed() -> Iterator[duckdb.DuckDBPyConnection]:
            yield conn
        return cls(borrowed, hold_seconds=float("inf"))

    def connection(self) -> duckdb.DuckDBPyConnection:
        if self._conn is not None and time.monotonic() - self._opened >= self.hold_seconds:
            self.close()
        if self._conn is None:
            began = time.perf_counter()
            self._stack = ExitStack()
            self._conn = self._stack.enter_context(self.connect())
            self._opened = time.monotonic()
            self.opens += 1
            self.open_seconds += time.perf_counter() - began
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside a write transaction, committed on exit (rolled back on an exception)."""
        with self._within(read_only=False) as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside a read-only transaction: every query sees the same snapshot."""
        with self._within(read_only=True) as conn:
            yield conn

    @contextmanager
    def _within(self, *, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        try:
            with transaction(self.connection(), read_only=read_only) as conn:
                yield conn
        finally:
            if self.hold_seconds <= 0:
                self.close()

    def close(self) -> None:
        if self._stack is not None:
            began = time.perf_counter()
            self._stack.close()
            self.open_seconds += time.perf_counter() - began
        self._stack = self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
