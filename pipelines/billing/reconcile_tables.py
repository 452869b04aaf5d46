"""The billing tables as reconciliation sees them, from the registry (object_types.py).

What a row should hold is what the ingestion's projector makes of the object as Stripe has it
now, restricted to the type's compared columns; repair writes that same projection through the
billing writer. A reconciled row is therefore indistinguishable from an ingested one, and the two
cannot disagree on what a column means.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import duckdb

from pipelines.billing import writer
from pipelines.billing.object_types import BY_NAME, STICKY, ObjectType, own_row, project
from pipelines.billing.projections import ProjectionError
from pipelines.store.locks import lock_keys
from pipelines.store.write import with_rows

# DuckDB settings for reconciliation's connection: one thread (its statements are small) and a
# bounded buffer pool. Without the bound, rewriting rows of tables that hold every object's raw
# JSON grows DuckDB's cache to a gigabyte at 100,000 subscriptions; with it, DuckDB evicts
# (the blocks are in the file) and the run stays under 500 MB.
CONNECT_CONFIG = {"threads": 1, "memory_limit": "192MB"}


def _ts(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


def _and(where: str | None) -> str:
    return f" AND {where}" if where else ""


def expected_row(kind: ObjectType, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The compared columns as ingestion would write them for this object. A sticky column the
    object does not speak to (no organisation in its metadata; ingestion keeps the one from
    Checkout or the customer) is left out."""
    row = own_row(kind, project(kind, dict(obj)), obj["id"])
    if row is None:
        raise ProjectionError(f"{kind.name} {obj['id']} projects no {kind.table} row")
    return {c: row.get(c) for c in kind.compared if not (c in STICKY and row.get(c) is None)}


class BillingTables:
    """reconcile.TableAdapter over the stripe_* tables. `mark` is the watermark repairs carry:
    Stripe's time of the run and its id (reconciliation sets it from the Events API cursor)."""

    def __init__(self, mark: tuple[int, str] | None = None):
        self.mark = mark or (int(time.time()), "reconcile")

    def expected(self, object_type: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        return expected_row(BY_NAME[object_type], obj)

    def rows(self, conn: duckdb.DuckDBPyConnection, object_type: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        kind = BY_NAME[object_type]
        # the transaction that reads these rows repairs them: it holds their objects' locks, as a
        # stripe-events batch does, so a repair and a drain on one object take turns (PostgreSQL)
        lock_keys(conn, writer.OBJECT_LOCK, ids)
        cur = with_rows(conn, f"SELECT t.{kind.key}, {', '.join(f't.{c}' for c in kind.compared)} "
                              f"FROM {kind.table} t WHERE t.{kind.key} IN (SELECT id FROM rows)"
                              f"{_and(kind.rows_where)}", writer.ids_table("id", ids))
        return {r[0]: dict(zip(kind.compared, r[1:])) for r in cur.fetchall()}

    def present_ids(self, conn: duckdb.DuckDBPyConnection, object_type: str, ids: list[str]) -> set[str]:
        """Which of these ids still have a live row (a customer flagged deleted does not)."""
        if not ids:
            return set()
        kind = BY_NAME[object_type]
        return {r[0] for r in with_rows(conn, f"SELECT {kind.key} FROM {kind.table} WHERE {kind.key} IN "
                                              f"(SELECT id FROM rows){_and(kind.live_where())}",
                                        writer.ids_table("id", ids)).fetchall()}

    def ids_created_before(self, conn: duckdb.DuckDBPyConnection, object_type: str, before: int) -> Iterable[str]:
        kind = BY_NAME[object_type]
        # a row without `created` (written from a link before its object was seen) counts as old
        sql = (f"SELECT {kind.key} FROM {kind.table} WHERE (created IS NULL OR created < ?)"
               f"{_and(kind.live_where())}")
        return [r[0] for r in conn.execute(sql, [_ts(before)]).fetchall()]

    def set_mark(self, created: int, run_id: str) -> None:
        self.mark = (int(created), f"reconcile:{run_id}")

    def upsert(self, conn: duckdb.DuckDBPyConnection, object_type: str,
               objects: list[Mapping[str, Any]]) -> dict[str, str]:
        """Write the objects exactly as the ingestion would (same projector, same writer), and
        move their watermarks to `self.mark`, so an older event arriving late is re-retrieved
        rather than applied over the repair."""
        kind = BY_NAME[object_type]
        plan = writer.Plan()
        refused: dict[str, str] = {}
        for obj in objects:
            try:
                projection = project(kind, dict(obj))
            except ProjectionError as exc:   # a field missing or of an unexpected type: named, not fatal
                refused[obj["id"]] = str(exc)
                continue
            plan.add(projection, self.mark, obj["id"], object_type, retrieved=True)
        writer.write(conn, plan)
        return refused

    def delete(self, conn: duckdb.DuckDBPyConnection, object_type: str, ids: list[str]) -> None:
        """Rows of objects Stripe no longer has: flagged deleted where the type keeps them (customers,
        as customer.deleted does), otherwise removed with their children (a subscription's items)."""
        kind = BY_NAME[object_type]
        lock_keys(conn, writer.OBJECT_LOCK, ids)
        gone = writer.ids_table("id", ids)
        if kind.soft_delete:
            with_rows(conn, f"UPDATE {kind.table} SET deleted = true, deleted_at = coalesce(deleted_at, now()), "
                            f"updated_at = now() WHERE {kind.key} IN (SELECT id FROM rows)", gone)
            return
        with_rows(conn, f"DELETE FROM {kind.table} WHERE {kind.key} IN (SELECT id FROM rows){_and(kind.rows_where)}",
                  gone)
        if kind.children:
            table, column = kind.children
            with_rows(conn, f"DELETE FROM {table} WHERE {column} IN (SELECT id FROM rows)", gone)
