"""Ad-hoc, read-only queries of the ledgers and reports: `python -m pipelines.query "SQL"` (`make query SQL=...`).

MAILROOM_STORE=duckdb: the DuckDB file. A writer holds DuckDB's file lock while it commits; a
read-only open that meets the lock fails at once. This command retries the open for a bounded time
(--wait, default 30 s) instead of failing.

MAILROOM_STORE=postgres: an in-memory DuckDB holding what the query names: the ledger tables it
names copied from PostgreSQL (DATABASE_URL) as one snapshot, and the report tables it names as views
over their objects in the asset store (ASSET_STORE_URL). Same SQL, same output; nothing waits.

The result is printed as a table, or written as CSV or Parquet.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import duckdb

from pipelines import settings
from pipelines.schema import ALL_DDL, LEDGER_TABLES, REPORT_TABLES, engine, subject
from pipelines.store.store import Store
from resources.duckdb import DuckDBResource

DEFAULT_DB = ".devstack/mailroom.duckdb"


class QueryError(RuntimeError):
    pass


@contextmanager
def read_only(path: str, wait_seconds: float) -> Iterator[tuple[duckdb.DuckDBPyConnection, float]]:
    """A read-only snapshot of the file (Store.read over a read-only connection, which waits out a
    writer's lock like every connection) and how long it waited for the lock."""
    if not Path(path).exists():
        raise QueryError(f"no DuckDB file at {path} (DUCKDB_PATH); start the stack or run the pipelines first")
    db = DuckDBResource(path=path, lock_timeout_seconds=wait_seconds)
    started = time.monotonic()
    with Store(lambda: db.connect(read_only=True), hold_seconds=float("inf")) as store:
        try:
            store.connection()
        except duckdb.IOException as exc:
            waited = time.monotonic() - started
            raise QueryError(f"could not open {path} read-only after {waited:.1f}s: {exc}") from None
        waited = time.monotonic() - started
        with store.read() as conn:
            yield conn, waited


def run(sql: str, path: str, *, wait_seconds: float = 30.0, csv: str | None = None,
        parquet: str | None = None, max_rows: int = 100) -> str:
    with read_only(path, wait_seconds) as (conn, waited):
        return _answer(conn, sql, csv, parquet, max_rows, f"ok (waited {waited:.2f}s for the lock)")


def _answer(conn: duckdb.DuckDBPyConnection, sql: str, csv: str | None, parquet: str | None,
            max_rows: int, no_result: str) -> str:
    try:
        rel = conn.sql(sql)
    except duckdb.Error as exc:
        raise QueryError(f"query failed: {exc}") from None
    if rel is None:
        return no_result
    if csv:
        rel.write_csv(csv)
        return f"wrote {csv}"
    if parquet:
        rel.write_parquet(parquet)
        return f"wrote {parquet}"
    frame = rel.limit(max_rows).df()
    return frame.to_string(index=False) if len(frame.columns) else "(no columns)"


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VIEWS = {subject(d): d for d in ALL_DDL if re.search(r"\bVIEW\b", d[:60])}


def tables_named(sql: str) -> tuple[list[str], list[str]]:
    """(ledger tables, report tables) whose names appear as words in `sql`; a view named brings the
    ledgers it reads. A word that only looks like a table (a column, a string) costs a copy, no error."""
    words = {w.lower() for w in _WORD.findall(sql)}
    for view, ddl in _VIEWS.items():
        if view in words:
            words |= {w.lower() for w in _WORD.findall(ddl.split(" AS", 1)[1])}
    return [t for t in LEDGER_TABLES if t in words], [t for t in REPORT_TABLES if t in words]


@contextmanager
def postgres_snapshot(sql: str, url: str, asset_url: str | None) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB with the ledgers `sql` names (one PostgreSQL snapshot) and the reports it
    names (views over the asset store's objects; an unpublished report is an empty table), inside a
    read-only transaction (pipelines/report_workspace.py)."""
    from pipelines.report_workspace import reading_workspace
    from pipelines.store.asset_store import AssetStore
    from pipelines.store.postgres import PostgresDatabase

    ledgers, reports = tables_named(sql)
    if reports and not asset_url:
        raise QueryError(f"the query names {', '.join(reports)}: set ASSET_STORE_URL (where the reports are published)")
    assets = AssetStore.from_url(asset_url, region=settings.value("AWS_REGION")) if reports else None
    with ExitStack() as stack:
        db = stack.enter_context(PostgresDatabase(url, max_size=1)) if ledgers else None
        yield stack.enter_context(reading_workspace(db, assets, ledgers, reports))


def run_postgres(sql: str, url: str, asset_url: str | None, *, csv: str | None = None,
                 parquet: str | None = None, max_rows: int = 100) -> str:
    with postgres_snapshot(sql, url, asset_url) as conn:
        return _answer(conn, sql, csv, parquet, max_rows, "ok")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.query", description=__doc__.splitlines()[0])
    parser.add_argument("sql")
    parser.add_argument("--db", default=settings.value("DUCKDB_PATH") or DEFAULT_DB,
                        help="DuckDB file (default: $DUCKDB_PATH, else .devstack/mailroom.duckdb); "
                             "MAILROOM_STORE=postgres reads DATABASE_URL and ASSET_STORE_URL instead")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for a writer's lock (DuckDB)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--csv", help="write the result to this CSV file")
    out.add_argument("--parquet", help="write the result to this Parquet file")
    parser.add_argument("--max-rows", type=int, default=100, help="rows printed at most")
    args = parser.parse_args(argv)
    try:
        if engine() == "postgres":
            from pipelines.schema import database_url

            print(run_postgres(args.sql, database_url(), settings.value("ASSET_STORE_URL"), csv=args.csv,
                               parquet=args.parquet, max_rows=args.max_rows))
        else:
            print(run(args.sql, args.db, wait_seconds=args.wait, csv=args.csv, parquet=args.parquet,
                      max_rows=args.max_rows))
    except (QueryError, settings.SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
