"""Ledger tables copied from PostgreSQL into a DuckDB connection, all from one snapshot.

    stats = snapshot(pg_database, duck_conn, ["email_messages", "email_events"])

The DuckDB connection already has the tables (the caller ran the schema's DDL); their DuckDB column
types say how each PostgreSQL column is read. Every table is read inside one
`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`, so together they are one consistent state of the
ledgers, as a DuckDB read transaction would see them.

The path is `COPY (SELECT ...) TO STDOUT (FORMAT csv)` -> Arrow's CSV reader (every column as text)
-> one `INSERT ... SELECT CAST(...)` in DuckDB, vectorized both sides. CSV keeps NULL (an unquoted
empty field) apart from the empty string (`""`); timestamps are written in UTC with their offset;
list columns travel as JSON arrays (`to_jsonb`), JSON columns as their text. The measured rate is in
docs/asset-store.md.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql as pgsql

from pipelines.store.transaction import transaction


@dataclass
class SnapshotStats:
    rows: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def rows_per_second(self) -> float:
        return self.total_rows / self.seconds if self.seconds else 0.0


def duckdb_columns(duck_conn: Any, table: str) -> list[tuple[str, str]]:
    rows = duck_conn.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main' "
        "AND database_name = current_database() ORDER BY column_index", [table]).fetchall()
    if not rows:
        raise LookupError(f"the DuckDB connection has no table {table!r} to snapshot into")
    return rows


def _is_list(duck_type: str) -> bool:
    return duck_type.endswith("[]")


def _select(table: str, columns: list[tuple[str, str]]) -> pgsql.Composed:
    parts = []
    for name, duck_type in columns:
        ident = pgsql.Identifier(name)
        parts.append(pgsql.SQL("to_jsonb({})::text").format(ident) if _is_list(duck_type) else ident)
    return pgsql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT csv)").format(
        pgsql.SQL(", ").join(parts), pgsql.Identifier(table))


def _cast(name: str, duck_type: str) -> str:
    quoted = '"' + name.replace('"', '""') + '"'
    if duck_type in ("VARCHAR", "TEXT"):
        return quoted
    if _is_list(duck_type):
        return f"CAST(CAST({quoted} AS JSON) AS {duck_type}) AS {quoted}"
    return f"CAST({quoted} AS {duck_type}) AS {quoted}"


def _read_csv(data: bytes, names: list[str]) -> pa.Table:
    if not data:
        return pa.table({n: pa.array([], pa.string()) for n in names})
    return pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=names, block_size=8 << 20),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, strings_can_be_null=True,
            quoted_strings_can_be_null=False, null_values=[""]))


def copy_table(raw: psycopg.Connection, duck_conn: Any, table: str) -> tuple[int, int]:
    """COPY one PostgreSQL table into the DuckDB table of the same name (appending); returns
    (rows, CSV bytes). Runs in whatever transaction `raw` is in."""
    columns = duckdb_columns(duck_conn, table)
    buf = bytearray()
    with raw.cursor().copy(_select(table, columns)) as copy:
        for chunk in copy:
            buf += chunk
    names = [n for n, _ in columns]
    rows = _read_csv(bytes(buf), names)
    if rows.num_rows:
        duck_conn.register("__snapshot_rows", rows)
        try:
            duck_conn.execute(f'INSERT INTO "{table}" SELECT {", ".join(_cast(n, t) for n, t in columns)} '
                              "FROM __snapshot_rows")
        finally:
            duck_conn.unregister("__snapshot_rows")
    return rows.num_rows, len(buf)


def snapshot(source: Any, duck_conn: Any, tables: Iterable[str]) -> SnapshotStats:
    """Copy `tables` from PostgreSQL into `duck_conn`'s tables of the same names, as one snapshot.

    `source`: a PostgresDatabase (a connection is borrowed and a REPEATABLE READ read transaction
    opened for the copy) or a PostgresConnection already inside a transaction of the caller's
    (which must be REPEATABLE READ for the tables to agree)."""
    stats = SnapshotStats()
    began = time.perf_counter()
    with ExitStack() as stack:
        conn = source if hasattr(source, "raw") else stack.enter_context(source.connect())
        if conn.raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            stack.enter_context(transaction(conn, read_only=True))
        # Timestamps with time zone written in UTC, in ISO form; floats exact (only this transaction).
        conn.raw.execute("SET LOCAL TimeZone = 'UTC'")
        conn.raw.execute("SET LOCAL DateStyle = 'ISO, YMD'")
        conn.raw.execute("SET LOCAL extra_float_digits = 3")
        for table in tables:
            stats.rows[table], size = copy_table(conn.raw, duck_conn, table)
            stats.bytes += size
    stats.seconds = time.perf_counter() - began
    return stats
