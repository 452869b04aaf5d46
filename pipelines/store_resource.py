"""The `store` resource: where this code location's ledgers live and where its reports are built.

MAILROOM_STORE chooses the engine (docs/postgres.md):
- `duckdb` (default): everything is in the DuckDB file at DUCKDB_PATH, as it always was. A
  ledger connection and a report workspace are both a transaction on that file.
- `postgres`: the ledgers are in PostgreSQL at DATABASE_URL (pooled, one pool per process and
  URL); a report is rebuilt in an in-memory DuckDB from a snapshot of the ledgers it reads and
  published to the asset store (ASSET_STORE_URL), where every host and operator reads it.

Every asset, check, job and consumer reaches the ledgers through `connect()` (as a `Store`), and the
reports through `reports()`. Nothing else chooses an engine.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
from pydantic import Field

from pipelines.schema import database
from pipelines.store.store import Store

_DATABASES: dict[tuple[str, int, int], Any] = {}
_LOCK = threading.Lock()


def postgres_database(url: str, pool_size: int):
    """This process's PostgresDatabase for `url` (made once; its pool closes when the process exits).
    Runs of the same code in one process share it instead of each opening connections. Keyed by the
    process too: a step forked from a process that had a pool never uses the parent's connections."""
    from pipelines.store.postgres import PostgresDatabase   # psycopg only in the postgres profile

    key = (url, pool_size, os.getpid())
    with _LOCK:
        db = _DATABASES.get(key)
        if db is None:
            db = _DATABASES[key] = PostgresDatabase(url, max_size=pool_size)
            atexit.register(db.close)
        return db


class MailroomStore(dg.ConfigurableResource):
    """The ledgers (MAILROOM_STORE: duckdb or postgres) and the report workspace."""

    engine: str = Field(default="duckdb", description="duckdb or postgres (MAILROOM_STORE).")
    duckdb_path: str = Field(description="DuckDB file: every table in the duckdb engine (DUCKDB_PATH).")
    database_url: str = Field(default="", description="PostgreSQL system of record in the postgres engine "
                              "(DATABASE_URL).")
    asset_store_url: str = Field(default="", description="Where the postgres engine publishes report tables "
                                 "(ASSET_STORE_URL: s3://bucket/prefix or a directory).")
    region: str | None = Field(default=None, description="AWS region of the asset store's S3 bucket (AWS_REGION).")
    pool_size: int = Field(default=4, description="PostgreSQL connections per process at most.")

    @property
    def path(self) -> str:
        """Where the ledgers are, for messages (a PostgreSQL URL names no password here)."""
        if self.engine == "postgres":
            from pipelines.schema import described
            return f"postgresql://{described(self.database_url)}"
        return self.duckdb_path

    def _ledgers(self):
        if self.engine == "duckdb":
            return database(self.duckdb_path)
        if self.engine == "postgres":
            if not self.database_url:
                raise ValueError("DATABASE_URL must be set when MAILROOM_STORE=postgres")
            return postgres_database(self.database_url, self.pool_size)
        raise ValueError(f"MAILROOM_STORE must be duckdb or postgres (got {self.engine!r})")

    @contextmanager
    def connect(self, read_only: bool = False, config: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """A connection to the ledgers (a Store's `connect`). `config`: DuckDB settings; ignored on
        PostgreSQL."""
        with self._ledgers().connect(read_only=read_only, config=dict(config) if config else None) as conn:
            yield conn

    def ledgers(self, *, config: Mapping[str, Any] | None = None, hold_seconds: float = 0.0) -> Store:
        config = dict(config) if config is not None else None
        return Store(lambda: self.connect(config=config), hold_seconds)

    @contextmanager
    def reports(self, *, reads: Sequence[str], writes: Sequence[str] = (),
                tables: Sequence[str] = ()) -> Iterator[Any]:
        """A DuckDB connection to rebuild or read report tables in, inside one transaction
        (pipelines/report_workspace.py).

        `reads`: the ledgers the report reads; `writes`: the report tables it rebuilds (published when
        the block ends without an exception); `tables`: report tables it only reads. On duckdb this is a
        transaction on the file (a read-only one when nothing is written)."""
        from pipelines.report_workspace import report_workspace

        with report_workspace(self._ledgers(), self._asset_store(), reads=[*reads, *tables], writes=writes) as conn:
            yield conn

    def _asset_store(self):
        if self.engine != "postgres":
            return None
        if not self.asset_store_url:
            raise ValueError("ASSET_STORE_URL must be set when MAILROOM_STORE=postgres (where the reports go)")
        return asset_store(self.asset_store_url, self.region)


_ASSET_STORES: dict[tuple[str, str | None], Any] = {}


def asset_store(url: str, region: str | None):
    """This process's AssetStore for `url` (its S3 client is made once)."""
    from pipelines.store.asset_store import AssetStore

    with _LOCK:
        store = _ASSET_STORES.get((url, region))
        if store is None:
            store = _ASSET_STORES[(url, region)] = AssetStore.from_url(url, region=region)
        return store
