"""Parsed SES events as one Arrow table per batch.

Workers build it, it crosses the process boundary as Arrow buffers (no per-value pickling),
and the writer hands it to DuckDB without turning it back into Python objects; only the few
columns the status machine reads become Python lists. `occurred_at` is read as microseconds
since the epoch: converting Arrow timestamps to datetime objects costs more than all the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pyarrow as pa

from pipelines.email.ses.ses_parse import SesEvent

TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema([
    ("event_id", pa.string()),
    ("sns_message_id", pa.string()),
    ("message_id", pa.string()),
    ("recipient", pa.string()),
    ("event_type", pa.string()),
    ("signal", pa.string()),           # the status-machine input; not stored
    ("bounce_type", pa.string()),
    ("bounce_subtype", pa.string()),
    ("occurred_at", TS),
    ("detail", pa.string()),
])
# Not SCHEMA.empty_table(): that imports pandas, ~60 MB in every verify worker.
EMPTY = pa.Table.from_batches([], schema=SCHEMA)


def to_table(events: Sequence[SesEvent]) -> pa.Table:
    if not events:
        return EMPTY
    return pa.Table.from_arrays(
        [pa.array([getattr(e, name) for e in events], type=SCHEMA.field(name).type) for name in SCHEMA.names],
        schema=SCHEMA)


def concat(tables: Iterable[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return EMPTY
    return pa.concat_tables(tables).combine_chunks() if len(tables) > 1 else tables[0]


def micros(table: pa.Table, column: str) -> list[int]:
    """A timestamp column as microseconds since the epoch."""
    return table.column(column).cast(pa.int64()).to_pylist()


def timestamps(micros: list[int | None]) -> pa.Array:
    """The inverse of `micros`: microseconds since the epoch as a timestamp column."""
    return pa.array(micros, type=pa.int64()).cast(TS)
