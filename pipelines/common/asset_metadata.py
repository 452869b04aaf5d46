"""What an asset shows in the Dagster UI besides its own figures: a row count and a Markdown
preview of a few rows (a table the UI renders on the asset's page).

Previews are of rollups and counts, never of rows that hold addresses or request contexts:
Dagster metadata is kept forever in the instance's event log.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import dagster as dg
import duckdb

PREVIEW_ROWS = 10


def row_count(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: list[str], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def preview(conn: duckdb.DuckDBPyConnection, query: str, params: list | None = None,
            limit: int = PREVIEW_ROWS) -> dg.MetadataValue:
    """The first `limit` rows of `query` as a Markdown table (MetadataValue.md)."""
    cur = conn.execute(f"SELECT * FROM ({query}) LIMIT {int(limit)}", params or [])
    columns = [d[0] for d in cur.description]
    rows = cur.fetchall()
    text = markdown_table(columns, rows) if rows else "_no rows yet_"
    return dg.MetadataValue.md(text)
