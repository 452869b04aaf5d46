"""The billing tables as reconciliation sees them: compared columns per object type, and repair.

Repair writes the same rows the event ingestion writes (billing-core's projections), so a
reconciled row is indistinguishable from an ingested one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import duckdb

from pipelines.billing.envelope import EnvelopeSettings
from pipelines.billing.ingest import IngestSettings, StripeIngest, _Plan
from pipelines.billing.projections import ProjectionError, project
from pipelines.common.counters import Counters


def _ref(value: Any) -> str | None:
    return value if isinstance(value, str) or value is None else value.get("id")


def _ts(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


def _subscription_of_invoice(inv: Mapping[str, Any]) -> str | None:
    parent = inv.get("parent") or {}
    details = parent.get("subscription_details") or {}
    return _ref(details.get("subscription")) or _ref(inv.get("subscription"))


def _period_end(sub: Mapping[str, Any]) -> int | None:
    items = ((sub.get("items") or {}).get("data")) or []
    ends = [i.get("current_period_end") for i in items if i.get("current_period_end")]
    return max(ends) if ends else sub.get("current_period_end")


# DuckDB settings for reconciliation's connection: one thread (its statements are small) and a
# bounded buffer pool. Without the bound, rewriting rows of tables that hold every object's raw
# JSON grows DuckDB's cache to a gigabyte at 100,000 subscriptions; with it, DuckDB evicts
# (the blocks are in the file) and the run stays under 500 MB.
CONNECT_CONFIG = {"threads": 1, "memory_limit": "192MB"}

# The event whose projection a repaired object goes through (same rows as the ingestion writes).
EVENT_TYPE = {"customer": "customer.updated", "subscription": "customer.subscription.updated",
              "invoice": "invoice.updated", "payment_intent": "payment_intent.succeeded"}
_WRITER = StripeIngest(IngestSettings(EnvelopeSettings(frozenset(), None)))

# A column the object does not speak to (an organisation the ingestion took from Checkout or the
# customer, where the subscription's metadata names none) is not compared.
SKIP = object()

# table, key column, and the compared columns with how to read each from the Stripe object
SPECS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "customer": ("stripe_customers", "customer_id", {
        "billing_email": lambda o: o.get("email"),
        "name": lambda o: o.get("name"),
        "deleted": lambda o: bool(o.get("deleted")),
        "organization_id": lambda o: (o.get("metadata") or {}).get("organization_id", SKIP),
    }),
    "subscription": ("stripe_subscriptions", "subscription_id", {
        "customer_id": lambda o: _ref(o["customer"]),
        "status": lambda o: o["status"],
        "cancel_at_period_end": lambda o: bool(o.get("cancel_at_period_end")),
        "current_period_end": lambda o: _ts(_period_end(o)),
        "quantity": lambda o: sum(int(i.get("quantity") or 0) for i in ((o.get("items") or {}).get("data") or [])),
        "organization_id": lambda o: (o.get("metadata") or {}).get("organization_id", SKIP),
    }),
    "invoice": ("stripe_invoices", "invoice_id", {
        "customer_id": lambda o: _ref(o["customer"]),
        "subscription_id": _subscription_of_invoice,
        "status": lambda o: o["status"],
        "amount_due": lambda o: o["amount_due"],
        "amount_paid": lambda o: o["amount_paid"],
        "currency": lambda o: o["currency"],
    }),
    "payment_intent": ("stripe_payments", "payment_id", {
        "amount": lambda o: o["amount"],
        "currency": lambda o: o["currency"],
        "status": lambda o: o["status"],
    }),
}
_KIND_FILTER = {"payment_intent": "kind = 'payment_intent'"}
# rows that still count as present: a deleted customer stays, flagged (customer.deleted keeps it)
_LIVE_FILTER = {**_KIND_FILTER, "customer": "NOT deleted"}


class BillingTables:
    """reconcile.TableAdapter over the stripe_* tables. `mark` is the watermark repairs carry:
    Stripe's time of the run and its id (reconciliation sets it from the Events API cursor)."""

    def __init__(self, mark: tuple[int, str] | None = None):
        self.mark = mark or (int(time.time()), "reconcile")

    def expected(self, object_type: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        out = {col: read(obj) for col, read in SPECS[object_type][2].items()}
        return {k: v for k, v in out.items() if v is not SKIP}

    def rows(self, conn: duckdb.DuckDBPyConnection, object_type: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        table, key, cols = SPECS[object_type]
        where = f" AND {_KIND_FILTER[object_type]}" if object_type in _KIND_FILTER else ""
        cur = conn.execute(f"SELECT {key}, {', '.join(cols)} FROM {table}"
                           f" WHERE {key} IN (SELECT unnest(?::VARCHAR[])){where}", [ids])
        names = list(cols)
        return {r[0]: dict(zip(names, r[1:])) for r in cur.fetchall()}

    def present_ids(self, conn: duckdb.DuckDBPyConnection, object_type: str, ids: list[str]) -> set[str]:
        """Which of these ids still have a live row (a customer flagged deleted does not)."""
        if not ids:
            return set()
        table, key, _ = SPECS[object_type]
        where = f" AND {_LIVE_FILTER[object_type]}" if object_type in _LIVE_FILTER else ""
        return {r[0] for r in conn.execute(f"SELECT {key} FROM {table} WHERE {key} IN"
                                           f" (SELECT unnest(?::VARCHAR[])){where}", [ids]).fetchall()}

    def ids_created_before(self, conn: duckdb.DuckDBPyConnection, object_type: str, before: int) -> Iterable[str]:
        table, key, _ = SPECS[object_type]
        where = f" AND {_LIVE_FILTER[object_type]}" if object_type in _LIVE_FILTER else ""
        # a row without `created` (written from a link before its object was seen) counts as old
        sql = f"SELECT {key} FROM {table} WHERE (created IS NULL OR created < ?){where}"
        return [r[0] for r in conn.execute(sql, [_ts(before)]).fetchall()]

    def set_mark(self, created: int, run_id: str) -> None:
        self.mark = (int(created), f"reconcile:{run_id}")

    def upsert(self, conn: duckdb.DuckDBPyConnection, object_type: str,
               objects: list[Mapping[str, Any]]) -> dict[str, str]:
        """Write the objects exactly as the ingestion would for an event carrying them (projections
        and the ingestion's write path), and move their watermarks to `self.mark`, so an older
        event arriving late is re-retrieved rather than applied over the repair."""
        plan = _Plan()
        refused: dict[str, str] = {}
        for obj in objects:
            try:
                projection = project(EVENT_TYPE[object_type], dict(obj))
            except ProjectionError as exc:   # a field missing or of an unexpected type: named, not fatal
                refused[obj["id"]] = str(exc)
                continue
            plan.apply(None, projection, self.mark, retrieved=True, object_id=obj["id"], object_type=object_type)
        # The ingestion's own write step (private: billing-core to expose it as a function).
        _WRITER._write(conn, plan, Counters())
        return refused

    def delete(self, conn: duckdb.DuckDBPyConnection, object_type: str, ids: list[str]) -> None:
        """Rows of objects Stripe no longer has: customers are flagged deleted (as customer.deleted
        does), other rows removed (subscriptions with their items)."""
        if object_type == "customer":
            conn.execute("UPDATE stripe_customers SET deleted = true, deleted_at = coalesce(deleted_at, now()),"
                         " updated_at = now() WHERE customer_id IN (SELECT unnest(?::VARCHAR[]))", [ids])
            return
        table, key, _ = SPECS[object_type]
        where = f" AND {_KIND_FILTER[object_type]}" if object_type in _KIND_FILTER else ""
        conn.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT unnest(?::VARCHAR[])){where}", [ids])
        if object_type == "subscription":
            conn.execute("DELETE FROM stripe_subscription_items WHERE subscription_id IN"
                         " (SELECT unnest(?::VARCHAR[]))", [ids])
