"""The SQL differences between the two engines, named one by one (no table, no domain).

The domains write DuckDB's SQL with `?` placeholders. What PostgreSQL spells differently is here,
as a function each side of which is plain SQL:

    dialect_of(conn).begin(read_only=True)      BEGIN TRANSACTION READ ONLY / ... REPEATABLE READ
    d.arg_max("event_type", "occurred_at")      arg_max(...) / (array_agg(... ORDER BY ...))[1]
    d.any_value("kind")                         any_value(kind) / min(kind)
    d.seconds("p.window_s")                     to_seconds(...) / make_interval(secs => ...)
    d.epoch("w.event_created")                  epoch(...)::BIGINT / extract(epoch FROM ...)::bigint
    d.from_text("raw", "JSON")                  raw / raw::jsonb (a text batch column into a JSON one)
    column_types(conn, "stripe_events")         DESCRIBE / information_schema, as {name: TYPE}
    d.epoch_us("occurred_at")                   epoch_us(...) / (extract(epoch FROM ...) * 1000000)::bigint
    pyformat("... = ? AND note = '50%'")        "... = %s AND note = '50%%'" (psycopg's style)
    pyformat("status = $pending")               "status = %(pending)s" (with a dict of parameters)

Everything else the domains use (ON CONFLICT, RETURNING, CTEs, `::` casts, now(), IS DISTINCT
FROM) is spelled the same by both. docs/postgres.md lists the statements still to port.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb


@dataclass(frozen=True)
class Dialect:
    name: str

    def begin(self, *, read_only: bool) -> str:
        if self.name == "duckdb":
            return "BEGIN TRANSACTION READ ONLY" if read_only else "BEGIN TRANSACTION"
        # DuckDB's transactions are snapshots; PostgreSQL's default (READ COMMITTED) takes a new
        # snapshot per statement. A read keeps one snapshot; a write stays READ COMMITTED, where
        # ON CONFLICT and row locks serialize writers without serialization failures to retry.
        return "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if read_only else "BEGIN"

    def arg_max(self, value: str, key: str) -> str:
        """`value` of the row with the largest `key` (rows whose key is NULL are ignored)."""
        if self.name == "duckdb":
            return f"arg_max({value}, {key})"
        return f"(array_agg({value} ORDER BY {key} DESC) FILTER (WHERE {key} IS NOT NULL))[1]"

    def any_value(self, expr: str) -> str:
        """One of the group's values (PostgreSQL 15 has no any_value; min is one of them)."""
        return f"any_value({expr})" if self.name == "duckdb" else f"min({expr})"

    def epoch_us(self, expr: str) -> str:
        """A timestamp as microseconds since the epoch (a bigint)."""
        return f"epoch_us({expr})" if self.name == "duckdb" else f"(extract(epoch FROM {expr}) * 1000000)::bigint"

    def seconds(self, expr: str) -> str:
        """An interval of `expr` (an integer) seconds."""
        return f"to_seconds({expr})" if self.name == "duckdb" else f"make_interval(secs => {expr})"

    def epoch(self, expr: str) -> str:
        """Whole seconds since 1970 of the timestamp `expr`, as a BIGINT."""
        return f"epoch({expr})::BIGINT" if self.name == "duckdb" else f"extract(epoch FROM {expr})::bigint"

    def from_text(self, expr: str, column_type: str) -> str:
        """`expr` (a text column of a batch) as a value for a column of `column_type` (as
        `column_types` spells it). DuckDB casts text to JSON on insert; PostgreSQL casts text to
        jsonb only when asked."""
        if self.name == "postgres" and column_type.upper() in ("JSON", "JSONB"):
            return f"{expr}::{column_type.lower()}"
        return expr


_NAMED = re.compile(r"\$([A-Za-z_]\w*)")

DUCKDB = Dialect("duckdb")
POSTGRES = Dialect("postgres")


def dialect_of(conn: object) -> Dialect:
    return DUCKDB if isinstance(conn, duckdb.DuckDBPyConnection) else POSTGRES


_PG_COLUMN_TYPES: dict[tuple[str, str], dict[str, str]] = {}


def column_types(conn: object, table: str) -> dict[str, str]:
    """{column: TYPE} of `table` in column order, upper case: DuckDB's DESCRIBE names (VARCHAR,
    TIMESTAMP WITH TIME ZONE, JSON, ...) or PostgreSQL's information_schema ones (TEXT, TIMESTAMP
    WITH TIME ZONE, JSONB, ARRAY, ...). PostgreSQL's are remembered per database: its schema changes
    only by a migration, and the catalog query costs a round trip per statement otherwise."""
    if dialect_of(conn) is DUCKDB:
        return {name: kind.upper() for name, kind, *_ in conn.execute(f"DESCRIBE {table}").fetchall()}
    key = (conn.raw.info.dsn, table)
    if key not in _PG_COLUMN_TYPES:
        rows = conn.execute("SELECT column_name, upper(data_type) FROM information_schema.columns "
                            "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
                            [table]).fetchall()
        if not rows:
            raise LookupError(f"no table {table} (are the migrations applied?)")
        _PG_COLUMN_TYPES[key] = dict(rows)
    return dict(_PG_COLUMN_TYPES[key])


def pyformat(sql: str) -> str:
    """`?` placeholders as psycopg's `%s`, DuckDB's named `$name` as `%(name)s`, and a literal `%`
    as `%%`, outside quoted strings, quoted identifiers and comments, which are copied as they are."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in ("'", '"'):
            end = i + 1
            while end < n:
                if sql[end] == c:
                    if end + 1 < n and sql[end + 1] == c:   # '' or "" inside the quotes
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i:end + 1].replace("%", "%%"))
            i = end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif c == "?":
            out.append("%s")
            i += 1
        elif c == "$" and (m := _NAMED.match(sql, i)):
            out.append(f"%({m.group(1)})s")
            i = m.end()
        elif c == "%":
            out.append("%%")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)
