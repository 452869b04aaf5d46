"""Reading the ledgers in a test, whichever store the environment names (MAILROOM_STORE)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipelines.schema import configured_store


def rows(env: Mapping[str, str], sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
    """`sql` (`?` placeholders, SQL both engines speak) in one read transaction."""
    with configured_store(env) as store, store.read() as conn:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]


def count(env: Mapping[str, str], table: str) -> int:
    return int(rows(env, f'SELECT count(*) FROM "{table}"')[0][0])
