"""The code location's schema: every table and view, gathered from each domain's tables.py.

The store (pipelines/store/) and the DuckDB resource know no table; this module, beside
resource_defs.py, is where the domains' DDL meets them. Every statement is safe to run again
(IF NOT EXISTS / OR REPLACE) and every table exists, empty, from the first connection: the
resource runs ALL_DDL on its first write connection in each process, and `create(path)` (`make
dev` calls it before Dagster starts; by hand: `python -m pipelines.schema`) makes the file with
all of it, so ad-hoc readers find every table before any run. Assets fill tables; they never create them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import duckdb

from pipelines import settings
from pipelines.billing import tables as billing
from pipelines.common import tables as common
from pipelines.email import tables as email
from pipelines.email_delivery import tables as email_delivery
from pipelines.store.store import Store
from resources.duckdb import DuckDBResource

ALL_DDL: tuple[str, ...] = (*common.TABLES, *email.TABLES, *email_delivery.TABLES, *billing.TABLES)


class MailroomDuckDB(DuckDBResource):
    """The DuckDB resource with this code location's schema (ALL_DDL)."""

    def schema(self) -> Sequence[str]:
        return ALL_DDL


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    for ddl in ALL_DDL:
        conn.execute(ddl)


def database(path: str, **settings_) -> MailroomDuckDB:
    """A DuckDB resource for `path` that creates this schema on its first write connection."""
    return MailroomDuckDB(path=path, **settings_)


def create(path: str) -> None:
    """Create the file at `path` with every table (idempotent): the resource's first connection
    runs the schema."""
    with Store(database(path).connect).transaction():
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.schema",
                                     description="Create the DuckDB file with every table (idempotent).")
    parser.add_argument("--db", default=settings.value("DUCKDB_PATH"), help="DuckDB file (default $DUCKDB_PATH)")
    args = parser.parse_args(argv)
    if not args.db:
        parser.error("no database: pass --db or set DUCKDB_PATH")
    create(args.db)
    print(f"schema ready: {args.db} ({len(ALL_DDL)} statements)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
