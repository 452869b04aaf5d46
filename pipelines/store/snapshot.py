"""Ledger tables copied from PostgreSQL into a DuckDB connection, all from one snapshot.

    stats = snapshot(pg_database, duck_conn, ["email_messages", "email_events"])

The DuckDB connection already has the tables (the caller ran the schema's DDL); their DuckDB column
types say how each PostgreSQL column is read. Every table is read inside one
`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`, so together they are one consistent state of the
ledgers, as a DuckDB read transaction would see them.

The path is `COPY (SELECT ...) TO STDOUT (FORMAT csv)` -> a scratch file (in /dev/shm where there is
one) -> DuckDB's CSV reader with each column's type -> one `INSERT ... SELECT`. CSV keeps NULL (an unquoted
empty field) apart from the empty string (`""`); timestamps are written in UTC with their offset;
list columns travel as JSON arrays (`to_jsonb`), JSON columns as their text. The measured rate is in
docs/asset-store.md.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import psycopg
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


def copy_statement(table: str, columns: list[tuple[str, str]]) -> pgsql.Composed:
    parts = []
    for name, duck_type in columns:
        ident = pgsql.Identifier(name)
        parts.append(pgsql.SQL("to_jsonb({})::text").format(ident) if _is_list(duck_type) else ident)
    return pgsql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT csv)").format(
        pgsql.SQL(", ").join(parts), pgsql.Identifier(table))


def _read_type(duck_type: str) -> str:
    """The type DuckDB's CSV reader parses a column as (lists and JSON as text, cast afterwards)."""
    return "VARCHAR" if _is_list(duck_type) or duck_type == "JSON" else duck_type


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _cast(name: str, duck_type: str) -> str:
    if _is_list(duck_type):
        return f"CAST(CAST({_quoted(name)} AS JSON) AS {duck_type})"
    if duck_type == "JSON":
        return f"CAST({_quoted(name)} AS JSON)"
    return _quoted(name)


def _scratch_dir() -> str | None:
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None   # memory, where there is one


def copy_table(raw: psycopg.Connection, duck_conn: Any, table: str) -> tuple[int, int]:
    """COPY one PostgreSQL table into the DuckDB table of the same name (appending); returns
    (rows, CSV bytes). Runs in whatever transaction `raw` is in.

    The CSV goes to a scratch file that DuckDB's own CSV reader parses with the columns' types: as
    fast as Arrow's reader plus casts (within noise, docs/asset-store.md) and the CSV never enters
    Python's heap. Quoted empty fields stay empty strings (allow_quoted_nulls=false); unquoted empty
    fields are NULL."""
    columns = duckdb_columns(duck_conn, table)
    with tempfile.NamedTemporaryFile(dir=_scratch_dir(), suffix=".csv") as scratch:
        with raw.cursor().copy(copy_statement(table, columns)) as copy:
            for chunk in copy:
                scratch.write(chunk)
        scratch.flush()
        size = scratch.tell()
        if not size:
            return 0, 0
        types = ", ".join(f"'{n.replace(chr(39), chr(39) * 2)}': '{_read_type(t)}'" for n, t in columns)
        path = scratch.name.replace("'", "''")
        # fetchall: DuckDB 2 keeps a result open until a fetch finds no more rows.
        (rows,), = duck_conn.execute(
            f'INSERT INTO "{table}" SELECT {", ".join(_cast(n, t) for n, t in columns)} '
            f"FROM read_csv('{path}', columns={{{types}}}, header=false, delim=',', quote='\"', escape='\"', "
            "nullstr='', allow_quoted_nulls=false, new_line='\\n', auto_detect=false)").fetchall()
    return rows, size


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
