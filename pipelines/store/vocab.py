"""Closed vocabularies: each is one Python enum, used in SQL as a parameter or a CHECK constraint."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


def sql_list(values: Iterable[StrEnum | str]) -> str:
    """`'a', 'b'` for an IN list. Enum values are code constants, never input, so quoting them
    here is safe; anything else goes in as a parameter."""
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)


def check(column: str, vocabulary: type[StrEnum], *, nullable: bool = False) -> str:
    """`CHECK (column IN (...))` for a table definition."""
    allowed = f"{column} IN ({sql_list(vocabulary)})"
    return f"CHECK ({column} IS NULL OR {allowed})" if nullable else f"CHECK ({allowed})"
