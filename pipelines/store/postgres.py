"""The PostgreSQL engine: pooled psycopg 3 connections that speak the store's SQL.

`connector(url)` is a `Connect` for `Store`: each transaction borrows a connection from a pool and
gives it back at COMMIT. A borrowed connection is a `PostgresConnection`, which takes the domains'
`?` placeholders (dialect.pyformat) and loads an Arrow batch as the temporary table `rows` by COPY,
so that write.with_rows and write.insert run the same set-wise statement on either engine.

The connection is in autocommit mode: transaction.transaction issues BEGIN / COMMIT / ROLLBACK
itself, exactly as on DuckDB. DATABASE_URL may carry a password: it is never logged, and errors
name the host and database only.
"""

from __future__ import annotations

import io
import re
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql as pgsql
from psycopg_pool import ConnectionPool

from pipelines.store.dialect import POSTGRES, pyformat

ROWS = "rows"   # the name a set-wise statement reads its batch by, on both engines

_PG_TYPES: dict[pa.DataType, str] = {
    pa.string(): "text", pa.large_string(): "text", pa.bool_(): "boolean", pa.int16(): "smallint",
    pa.int32(): "integer", pa.int64(): "bigint", pa.float32(): "real", pa.float64(): "double precision",
    pa.date32(): "date",
}


def pg_type(t: pa.DataType) -> str:
    """The PostgreSQL column type of an Arrow type (a clear error for one not handled)."""
    if t in _PG_TYPES:
        return _PG_TYPES[t]
    if getattr(t, "extension_name", None) == "arrow.json":
        return "jsonb"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pg_type(t.value_type) + "[]"
    if pa.types.is_null(t):
        return "text"
    raise TypeError(f"no PostgreSQL type for the Arrow type {t} (pipelines/store/postgres.py)")


def _csv_safe(table: pa.Table) -> bool:
    return not any(pa.types.is_list(f.type) or pa.types.is_large_list(f.type) for f in table.schema)


class PostgresConnection:
    """A psycopg connection with DuckDB's calling convention (`execute(sql, params)` -> cursor)."""

    dialect = POSTGRES

    def __init__(self, raw: psycopg.Connection):
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> psycopg.Cursor:
        """`params`: a sequence for `?` placeholders or a mapping for `$name` ones."""
        return self.raw.execute(pyformat(sql), params if isinstance(params, Mapping) else list(params or ()))

    def executemany(self, sql: str, params_seq: Sequence[Sequence[Any]]) -> psycopg.Cursor:
        cur = self.raw.cursor()
        cur.executemany(pyformat(sql), params_seq)
        return cur

    def load_rows(self, rows: pa.Table, name: str = ROWS) -> None:
        """`rows` as the temporary table `name` (replacing one of that name), by COPY."""
        self.raw.execute(pgsql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(pgsql.Identifier(name)))
        columns = pgsql.SQL(", ").join(
            pgsql.SQL("{} {}").format(pgsql.Identifier(f.name), pgsql.SQL(pg_type(f.type))) for f in rows.schema)
        self.raw.execute(pgsql.SQL("CREATE TEMPORARY TABLE {} ({})").format(pgsql.Identifier(name), columns))
        copy_into(self.raw, name, rows)

    def with_rows(self, sql: str, rows: pa.Table, params: Sequence[Any] | None = None) -> psycopg.Cursor:
        """Run `sql`, in which the batch `rows` is the relation `rows`. The cursor holds the result.

        Inside a transaction (the store's way) the batch goes into a temporary table kept for the
        session, one per column layout (`rows_<hash>`, ON COMMIT DELETE ROWS), emptied before it
        is filled, and `rows` in `sql` names it: creating and dropping a table per statement cost
        more than the statement (catalog rows written and deleted, ~10 ms each on the SES ingest).
        Outside one (autocommit) the batch is the temporary table `rows`, dropped after."""
        if self.raw.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
            self.load_rows(rows)
            try:
                return self.execute(sql, params)
            finally:
                if self.raw.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
                    self.raw.execute(f"DROP TABLE IF EXISTS pg_temp.{ROWS}")
        table = kept_table(self.raw, rows.schema)
        copy_into(self.raw, table, rows)
        return self.execute(naming_rows(sql, f"pg_temp.{table}"), params)

    def with_values(self, sql: str, column: str, values: Sequence[str],
                    params: Sequence[Any] | None = None) -> psycopg.Cursor:
        """Run `sql`, in which `rows` is one text column `column` holding `values`: one array
        parameter (write.with_values)."""
        return self.execute(_values_relation(sql, column), [list(values), *(params or ())])


def _values_relation(sql: str, column: str) -> str:
    if len(re.findall(r"(?<![\w.])rows(?!\w)", sql)) != 1 or re.search(r"(?<![\w.])rows\s+(?!WHERE|ORDER|GROUP|LIMIT|\))\w", sql):
        raise ValueError("with_values: `rows` must appear once in the statement, without an alias")
    return naming_rows(sql, f"(SELECT unnest(?::text[]) AS {pgsql.Identifier(column).as_string(None)}) AS rows")


def kept_table(raw: psycopg.Connection, schema: pa.Schema) -> str:
    """The session's temporary table for batches of this column layout, created if missing (also
    after a rolled-back transaction dropped it) and emptied, in one round trip."""
    columns = [(f.name, pg_type(f.type)) for f in schema]
    name = f"rows_{zlib.crc32(repr(columns).encode()):08x}"
    ddl = pgsql.SQL("CREATE TEMPORARY TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS; DELETE FROM pg_temp.{}").format(
        pgsql.Identifier(name),
        pgsql.SQL(", ").join(pgsql.SQL("{} {}").format(pgsql.Identifier(n), pgsql.SQL(t)) for n, t in columns),
        pgsql.Identifier(name))
    raw.execute(ddl)
    return name


_QUOTED_OR_ROWS = re.compile(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*)|(?<![\w.])rows(?!\w)")


def naming_rows(sql: str, table: str) -> str:
    """`sql` with the relation `rows` (the word, outside quotes and comments) renamed `table`."""
    return _QUOTED_OR_ROWS.sub(lambda m: m.group(1) or table, sql)


def _storage(rows: pa.Table) -> pa.Table:
    """Extension columns (Arrow's JSON type) as their storage: the same text, which Arrow's CSV
    writer takes and the jsonb column parses."""
    if not any(isinstance(f.type, pa.BaseExtensionType) for f in rows.schema):
        return rows
    return pa.table({name: col.combine_chunks().storage if isinstance(col.type, pa.BaseExtensionType) else col
                     for name, col in zip(rows.column_names, rows.columns)})


def copy_into(raw: psycopg.Connection, table: str, rows: pa.Table) -> None:
    """COPY an Arrow table into `table` (columns by name). Scalar columns go as CSV written by
    Arrow's C++ writer; a batch with list columns goes row by row through psycopg's COPY."""
    names = pgsql.SQL(", ").join(pgsql.Identifier(n) for n in rows.column_names)
    if _csv_safe(rows):
        rows = _storage(rows)
        buf = io.BytesIO()
        # Every non-null value quoted, a null unquoted and empty: COPY reads "" as the empty string
        # and an unquoted empty field as NULL.
        pacsv.write_csv(rows, buf, pacsv.WriteOptions(include_header=False, quoting_style="all_valid"))
        stmt = pgsql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(pgsql.Identifier(table), names)
        with raw.cursor().copy(stmt) as copy:
            copy.write(buf.getvalue())
        return
    stmt = pgsql.SQL("COPY {} ({}) FROM STDIN").format(pgsql.Identifier(table), names)
    with raw.cursor().copy(stmt) as copy:
        for row in zip(*(c.to_pylist() for c in rows.columns)):
            copy.write_row(row)


def pool(url: str, *, min_size: int = 1, max_size: int = 4) -> ConnectionPool:
    return ConnectionPool(url, min_size=min_size, max_size=max_size, open=True,
                          kwargs={"autocommit": True}, name="mailroom-store")


def connector(source: str | ConnectionPool) -> Callable[[], AbstractContextManager[PostgresConnection]]:
    """A `Connect` for `Store`: borrows a pooled connection per transaction. `source` is a
    DATABASE_URL (a pool is made for it) or a pool the caller owns."""
    connections = pool(source) if isinstance(source, str) else source

    @contextmanager
    def connect() -> Iterator[PostgresConnection]:
        with connections.connection() as raw:
            yield PostgresConnection(raw)

    connect.pool = connections   # type: ignore[attr-defined]  (to close it: connect.pool.close())
    return connect


class PostgresDatabase:
    """The ledgers on PostgreSQL with the DuckDB resource's calling convention (`connect()`, `path`):
    what code written against `database(path)` needs, so the same function runs on either engine.
    The pool is this object's; `close()` closes it. `read_only` and `config` are accepted and
    ignored (a read is made read-only by the transaction, `Store.read()`)."""

    def __init__(self, url: str, *, max_size: int = 4, require_migrated: bool = True):
        self.path = url
        self.pool = pool(url, max_size=max_size)
        self._connect = connector(self.pool)
        if require_migrated:
            from pipelines.store import migrate
            try:
                with self.pool.connection() as raw:
                    migrate.require_current(raw)
            except BaseException:
                self.pool.close()
                raise

    @contextmanager
    def connect(self, read_only: bool = False, config: Mapping[str, Any] | None = None) -> Iterator[PostgresConnection]:
        with self._connect() as conn:
            yield conn

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> PostgresDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
