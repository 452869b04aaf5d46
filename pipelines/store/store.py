"""Store: where consumers get their DuckDB transactions.

A run holds one connection across consecutive batches for at most `hold_seconds`, then
closes it between batches so ad-hoc readers get a turn: opening and closing per batch costs a
checkpoint each time (most of the write cost at 5,000 notifications a batch); holding the
file for a whole run would lock readers out for minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager

import duckdb

from pipelines.store.transaction import transaction

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


class Store:
    def __init__(self, connect: Connect, hold_seconds: float = 10.0):
        self.connect = connect
        self.hold_seconds = hold_seconds
        self._stack: ExitStack | None = None
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._opened = 0.0
        self.opens = 0

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
            self._stack = ExitStack()
            self._conn = self._stack.enter_context(self.connect())
            self._opened = time.monotonic()
            self.opens += 1
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with transaction(self.connection()) as conn:
            yield conn

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack = self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
