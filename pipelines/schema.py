"""Every table and view, gathered from each domain's tables.py; created on first connection.

Each statement must be safe to run again (IF NOT EXISTS / OR REPLACE). The DuckDB resource
is handed ALL_DDL (pipelines/resource_defs.py); it imports no domain.
"""

from __future__ import annotations

import duckdb

from pipelines.billing import tables as billing
from pipelines.common import tables as common
from pipelines.email import tables as email
from pipelines.email_delivery import tables as email_delivery
from resources.duckdb import DuckDBResource

ALL_DDL: list[str] = [*common.TABLES, *email.TABLES, *email_delivery.TABLES, *billing.TABLES]


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    for ddl in ALL_DDL:
        conn.execute(ddl)


def database(path: str, **settings) -> DuckDBResource:
    """A DuckDB resource for `path` that creates this schema on its first write connection."""
    return DuckDBResource(path=path, ddl=ALL_DDL, **settings)
