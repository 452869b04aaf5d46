"""Where a report function runs: one DuckDB connection holding the ledgers it reads and the report
tables it writes, on either store engine.

    with report_workspace(ledgers, asset_store, reads=["email_messages"], writes=["email_sends_daily"]) as conn:
        sends_daily.materialize(conn)

- DuckDB profile (`ledgers` is the DuckDB resource, `database(path)`): a write transaction on the
  file (a read transaction when there are no writes), exactly as before; nothing is published and
  `asset_store` may be None.
- PostgreSQL profile (`ledgers` is a PostgresDatabase): an in-memory DuckDB holding only the named
  tables. The `reads` ledgers are copied from PostgreSQL as one REPEATABLE READ snapshot
  (pipelines/store/snapshot.py); report tables named in `reads` or `writes` are loaded from the asset
  store (so ses_reputation keeps its history). The function runs in a transaction there, and on a
  clean exit each `writes` table is published, each one atomically, conditional on the version
  loaded: a concurrent publisher of the same table makes this one raise AssetConflict (rerun it)
  instead of overwriting rows it never saw. An exception publishes nothing.

A table not named is absent from the in-memory DuckDB, so a forgotten read fails loudly rather
than reading an empty table.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import duckdb

from pipelines import settings
from pipelines.schema import LEDGER_TABLES, REPORT_TABLES, create_tables, creation
from pipelines.store.asset_store import AssetStore, Version
from pipelines.store.snapshot import SnapshotStats, snapshot
from pipelines.store.store import Store
from pipelines.store.transaction import transaction


@dataclass
class WorkspaceLog:
    """What a PostgreSQL-profile workspace did (for a materialization's metadata)."""
    snapshot: SnapshotStats | None = None
    loaded: dict[str, Version] = field(default_factory=dict)
    published: dict[str, Version] = field(default_factory=dict)


def configured_asset_store(environ=None) -> AssetStore | None:
    """The asset store ASSET_STORE_URL names (None when empty or unset); S3's region is AWS_REGION."""
    url = settings.value("ASSET_STORE_URL", environ)
    return AssetStore.from_url(url, region=settings.value("AWS_REGION", environ)) if url else None


def is_postgres(ledgers: Any) -> bool:
    from pipelines.store.postgres import PostgresDatabase

    return isinstance(ledgers, PostgresDatabase)


def _check(reads: Sequence[str], writes: Sequence[str]) -> None:
    known = set(LEDGER_TABLES) | set(REPORT_TABLES)
    if unknown := [t for t in reads if t not in known]:
        raise ValueError(f"reads names no ledger or report table: {unknown}")
    if not_reports := [t for t in writes if t not in REPORT_TABLES]:
        raise ValueError(f"writes must name report tables (schema.REPORT_TABLES), not {not_reports}")


@contextmanager
def report_workspace(ledgers: Any, asset_store: AssetStore | None, reads: Sequence[str] = (),
                     writes: Sequence[str] = (), *, log: WorkspaceLog | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection with `reads` and `writes` (see the module's docstring). `log`, when given,
    is filled with the snapshot's figures and the versions loaded and published."""
    reads, writes = list(reads), list(writes)
    _check(reads, writes)
    if not is_postgres(ledgers):
        store = Store(ledgers.connect)
        with (store.transaction() if writes else store.read()) as conn:
            yield conn
        return
    if asset_store is None:
        raise ValueError("the PostgreSQL profile needs an asset store (ASSET_STORE_URL) for the report tables")
    log = log if log is not None else WorkspaceLog()
    ledger_reads = [t for t in reads if t in LEDGER_TABLES]
    report_reads = [t for t in dict.fromkeys(reads + writes) if t in REPORT_TABLES]
    conn = duckdb.connect(":memory:")
    try:
        create_tables(conn, ledger_reads + report_reads)
        if ledger_reads:
            log.snapshot = snapshot(ledgers, conn, ledger_reads)
        for table in report_reads:
            log.loaded[table] = asset_store.load(conn, table)
        with transaction(conn, read_only=not writes):
            yield conn
        for table in writes:
            log.published[table] = asset_store.publish(conn, table, expect=log.loaded[table].version)
    finally:
        conn.close()


@contextmanager
def reading_workspace(ledgers: Any, asset_store: AssetStore | None, ledger_tables: Sequence[str],
                      report_tables: Sequence[str]) -> Iterator[duckdb.DuckDBPyConnection]:
    """For readers in the PostgreSQL profile (pipelines/query.py): an in-memory DuckDB with
    `ledger_tables` copied from `ledgers` (a PostgresDatabase; one snapshot) and `report_tables` as
    views over the asset store's objects (a report never published: an empty table), inside a
    read-only transaction. Nothing is published."""
    conn = duckdb.connect(":memory:")
    try:
        create_tables(conn, list(ledger_tables))
        if ledger_tables:
            snapshot(ledgers, conn, ledger_tables)
        if report_tables:
            if asset_store is None:
                raise ValueError("reading report tables needs an asset store (ASSET_STORE_URL)")
            asset_store.attach_views(conn, report_tables, {t: creation(t) for t in report_tables})
        with transaction(conn, read_only=True):
            yield conn
    finally:
        conn.close()
