"""Ad-hoc, read-only queries of the DuckDB file: `python -m pipelines.query "SQL"` (`make query SQL=...`).

A writer holds DuckDB's file lock while it commits; a read-only open that meets the lock fails at
once. This command retries the open for a bounded time (--wait, default 30 s) instead of failing,
then prints the result as a table, or writes CSV or Parquet.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from pipelines import settings
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
        try:
            rel = conn.sql(sql)
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {exc}") from None
        if rel is None:
            return f"ok (waited {waited:.2f}s for the lock)"
        if csv:
            rel.write_csv(csv)
            return f"wrote {csv}"
        if parquet:
            rel.write_parquet(parquet)
            return f"wrote {parquet}"
        frame = rel.limit(max_rows).df()
        return frame.to_string(index=False) if len(frame.columns) else "(no columns)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.query", description=__doc__.splitlines()[0])
    parser.add_argument("sql")
    parser.add_argument("--db", default=settings.value("DUCKDB_PATH") or DEFAULT_DB,
                        help="DuckDB file (default: $DUCKDB_PATH, else .devstack/mailroom.duckdb)")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for a writer's lock")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--csv", help="write the result to this CSV file")
    out.add_argument("--parquet", help="write the result to this Parquet file")
    parser.add_argument("--max-rows", type=int, default=100, help="rows printed at most")
    args = parser.parse_args(argv)
    try:
        print(run(args.sql, args.db, wait_seconds=args.wait, csv=args.csv, parquet=args.parquet,
                  max_rows=args.max_rows))
    except QueryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
