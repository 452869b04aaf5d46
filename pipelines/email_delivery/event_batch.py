"""Parsed SES events as one Arrow table per batch.

The writer builds it from plain column lists (examine.event_columns: the verify workers send
those, since they do not import pyarrow) and hands it to DuckDB without turning it back into
Python objects; only the few columns the status machine reads become Python lists.
`occurred_at` is read as microseconds since the epoch: converting Arrow timestamps to datetime
objects costs more than all the rest.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from pipelines.email_delivery.examine import EVENT_FIELDS, event_columns
from pipelines.email_delivery.ses_parse import SesEvent
from pipelines.store.write import TS

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
EMPTY = SCHEMA.empty_table()
assert tuple(SCHEMA.names) == EVENT_FIELDS, "the table's columns are SesEvent's fields, in order"


def to_table(events: list[SesEvent]) -> pa.Table:
    return from_columns(event_columns(events))


def from_columns(columns: list[list]) -> pa.Table:
    """The table for examine.event_columns' lists (occurred_at in microseconds since the epoch)."""
    if not columns or not columns[0]:
        return EMPTY
    return pa.Table.from_arrays(
        [timestamps(values) if name == "occurred_at" else pa.array(values, type=type_)
         for values, name, type_ in zip(columns, SCHEMA.names, SCHEMA.types)], schema=SCHEMA)


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
