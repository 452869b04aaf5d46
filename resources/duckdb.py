"""DuckDB: short-lived connections to one file, the given schema created on first use.

DuckDB lets one process at a time open a file for writing. Connections are held only
for the length of a transaction, and opening retries while another process holds the
lock, so runs, benchmarks and ad-hoc readers take turns instead of failing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field

_READY: set[str] = set()


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "lock" in text.lower() and ("Could not set lock" in text or "Conflicting lock" in text)


class DuckDBResource(dg.ConfigurableResource):
    path: str = Field(description="DuckDB database file.")
    lock_timeout_seconds: float = 120.0
    # Idempotent DDL (CREATE ... IF NOT EXISTS) run once per process on the first write connection.
    # The code location hands in pipelines.store.schema.ALL_DDL; this resource knows no table.
    ddl: list[str] = Field(default_factory=list, description="DDL run on the first write connection.")

    @contextmanager
    def connect(self, read_only: bool = False, config: dict | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """`config`: DuckDB settings for this connection (e.g. {"threads": 1})."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_seconds
        delay = 0.02
        while True:
            try:
                conn = duckdb.connect(self.path, read_only=read_only, config=config or {})
                break
            except duckdb.IOException as exc:
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay + random.random() * delay)
                delay = min(delay * 2, 1.0)
        try:
            if not read_only and self.ddl and self.path not in _READY:
                for ddl in self.ddl:
                    conn.execute(ddl)
                _READY.add(self.path)
            yield conn
        finally:
            conn.close()
