"""Set-wise writes of projection rows: one Arrow table per table and one statement each
(pipelines.store.write reads the Arrow table in place).

Column types come from the table itself (DESCRIBE, cached per table): Stripe's epoch seconds
become TIMESTAMPTZ, JSON columns take text. Two modes:
- replace: insert, or on the key overwrite the Stripe-owned columns; organisation links are
  kept (`organization_id` is only replaced by a non-null value);
- merge: insert when absent, else only fill the columns that are still NULL (`deleted` is ORed).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import duckdb
import pyarrow as pa

from pipelines.store.write import with_rows

_TYPES: dict[str, dict[str, str]] = {}
STICKY = {"organization_id"}   # never cleared by a payload that does not name one


def column_types(conn: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    if table not in _TYPES:
        _TYPES[table] = {name: kind for name, kind, *_ in conn.execute(f"DESCRIBE {table}").fetchall()}
    return _TYPES[table]


def _arrow_type(sql_type: str, values: list) -> pa.DataType:
    t = sql_type.upper()
    if t.startswith("TIMESTAMP"):  # Stripe's epoch seconds, or our own datetimes
        first = next((v for v in values if v is not None), None)
        return pa.timestamp("us" if isinstance(first, datetime) else "s", tz="UTC")
    if t in ("BIGINT", "INTEGER", "HUGEINT"):
        return pa.int64()
    if t == "BOOLEAN":
        return pa.bool_()
    return pa.string()


def to_arrow(conn: duckdb.DuckDBPyConnection, table: str, rows: list[dict], columns: list[str]) -> pa.Table:
    types = column_types(conn, table)
    out = {}
    for c in columns:
        values = [r.get(c) for r in rows]
        out[c] = pa.array(values, _arrow_type(types[c], values))
    return pa.table(out)


def _unique(rows: Iterable[dict], key: tuple[str, ...]) -> list[dict]:
    last: dict[tuple, dict] = {}
    for r in rows:
        last[tuple(r[k] for k in key)] = r  # the later row (a later event) wins
    return list(last.values())


def upsert(conn: duckdb.DuckDBPyConnection, table: str, key: tuple[str, ...], rows: list[dict], *,
           merge: bool = False) -> int:
    if not rows:
        return 0
    rows = _unique(rows, key)
    types = column_types(conn, table)
    if merge:
        columns = [c for c in types if any(c in r for r in rows) and c != "updated_at"]
    else:
        columns = [c for c in types if c != "updated_at"]
    arrow = to_arrow(conn, table, rows, columns)
    updates = []
    for c in columns:
        if c in key:
            continue
        if merge:
            updates.append(f"{c} = {table}.{c} OR excluded.{c}" if c == "deleted"
                           else f"{c} = COALESCE({table}.{c}, excluded.{c})")
        elif c in STICKY:
            updates.append(f"{c} = COALESCE(excluded.{c}, {table}.{c})")
        else:
            updates.append(f"{c} = excluded.{c}")
    has_updated_at = "updated_at" in types
    if has_updated_at:
        updates.append("updated_at = now()")
    cols = ", ".join(columns) + (", updated_at" if has_updated_at else "")
    select = ", ".join(columns) + (", now()" if has_updated_at else "")
    action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
    with_rows(conn, f"INSERT INTO {table} ({cols}) SELECT {select} FROM rows "
                    f"ON CONFLICT ({', '.join(key)}) {action}", arrow)
    return len(rows)
