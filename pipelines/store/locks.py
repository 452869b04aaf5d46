"""Per-key serialization of writers, for the checks a unique key alone cannot make.

    lock_keys(conn, "email-address", addresses)

On PostgreSQL each key takes a transaction-scoped advisory lock (released at COMMIT or ROLLBACK),
in one fixed order, so two transactions over overlapping keys take turns instead of deadlocking,
and whatever one reads after the lock includes what the other committed. On DuckDB it does
nothing: one process writes the file at a time, so every write transaction already runs alone.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

import duckdb


def namespace(name: str) -> int:
    """A stable 32-bit lock namespace for `name` (so different kinds of key never collide)."""
    return zlib.crc32(name.encode()) - 2**31


def lock_keys(conn: Any, name: str, keys: Iterable[str]) -> int:
    """Hold the lock of every key in `keys` until the transaction ends; returns how many keys."""
    if isinstance(conn, duckdb.DuckDBPyConnection):
        return 0
    distinct = sorted(set(keys))
    if distinct:
        conn.execute(
            "SELECT count(pg_advisory_xact_lock(?, h)) FROM "
            "(SELECT DISTINCT hashtext(k) AS h FROM unnest(?::text[]) AS k ORDER BY h) AS ordered",
            [namespace(name), distinct]).fetchone()
    return len(distinct)
