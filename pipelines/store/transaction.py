"""The one BEGIN / COMMIT / ROLLBACK wrapper (Store.transaction and Store.read use it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Everything inside commits together or not at all (the exception is re-raised).
    `read_only`: a snapshot that refuses any write."""
    conn.execute("BEGIN TRANSACTION READ ONLY" if read_only else "BEGIN TRANSACTION")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
