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


def table(env: Mapping[str, str], name: str, *, where: str = "", exclude: Sequence[str] = ()) -> list[tuple]:
    """Every row of `name` (optionally filtered by `where`, minus the `exclude` columns), sorted: the
    same list for the same rows on either engine."""
    with configured_store(env) as store, store.read() as conn:
        cur = conn.execute(f'SELECT * FROM "{name}"' + (f" WHERE {where}" if where else ""))
        names = [d[0] for d in cur.description]
        keep = [i for i, n in enumerate(names) if n not in exclude]
        found = [tuple(r[i] for i in keep) for r in cur.fetchall()]
    return sorted(found, key=repr)
