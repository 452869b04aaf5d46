"""The one BEGIN / COMMIT / ROLLBACK wrapper (Store.transaction and Store.read use it), on a DuckDB
connection or a PostgreSQL one (postgres.PostgresConnection); dialect.py says how each begins."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pipelines.store.dialect import dialect_of


@contextmanager
def transaction(conn: Any, *, read_only: bool = False) -> Iterator[Any]:
    """Everything inside commits together or not at all (the exception is re-raised).
    `read_only`: a snapshot that refuses any write."""
    conn.execute(dialect_of(conn).begin(read_only=read_only))
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
