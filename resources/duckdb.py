"""DuckDB: short-lived connections to one file, the schema created on first use.

DuckDB lets one process at a time open a file for writing. Connections are held only
for the length of a transaction, and opening retries while another process holds the
lock, so runs, benchmarks and ad-hoc readers take turns instead of failing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field

_READY: set[tuple[type, str]] = set()


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "lock" in text.lower() and ("Could not set lock" in text or "Conflicting lock" in text)


class DuckDBResource(dg.ConfigurableResource):
    """Knows no table. A code location subclasses it and overrides `schema()`; the schema is code,
    not configuration, so it never shows in the resource's config (the launchpad)."""

    path: str = Field(description="DuckDB database file.")
    lock_timeout_seconds: float = Field(default=120.0, description="How long to wait for another process's "
                                        "write lock before failing.")

    def schema(self) -> Sequence[str]:
        """Idempotent DDL (CREATE ... IF NOT EXISTS) run once per process on the first write connection."""
        return ()

    @contextmanager
    def connect(self, read_only: bool = False, config: dict | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """`config`: DuckDB settings for this connection (e.g. {"threads": 1})."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_seconds
        delay = 0.01
        while True:
            try:
                conn = duckdb.connect(self.path, read_only=read_only, config=config or {})
                break
            except duckdb.IOException as exc:
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay + random.random() * delay)
                delay = min(delay * 2, 0.25)   # a short wait between commits is seen soon
        try:
            ready = (type(self), self.path)
            if not read_only and ready not in _READY:
                conn.execute("BEGIN TRANSACTION")   # all of the schema or none of it
                for ddl in self.schema():
                    conn.execute(ddl)
                conn.execute("COMMIT")
                _READY.add(ready)
            yield conn
        finally:
            conn.close()
