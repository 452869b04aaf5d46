"""The one way projections reach the billing tables: gather them in a `Plan`, then `write` it.

The stripe-events ingestion and reconciliation's repairs both write through here, so a repaired
row is indistinguishable from an ingested one. Each table is written with one statement that reads
an Arrow table in place (pipelines.store.write). Column types come from the table itself: Stripe's
epoch seconds become TIMESTAMPTZ, JSON columns take text. Two modes per table:
- replace: insert, or on the key overwrite the Stripe-owned columns; a sticky column
  (object_types.STICKY: the organisation a customer bills) is only replaced by a non-null value;
- merge: insert when absent, else only fill the columns that are still NULL (`deleted` is ORed).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import duckdb
import pyarrow as pa

from pipelines.billing.object_types import STICKY, TABLES
from pipelines.billing.projections import OrgLink, Projection
from pipelines.billing.vocab import PaymentKind, SubscriptionStatus, sql_in
from pipelines.store.dialect import DUCKDB, column_types, dialect_of
from pipelines.store.write import STR, TS, arrow, with_rows

Mark = tuple[int, str]   # (Stripe `created` of the state applied, the event id or reconcile run)
# Lock namespace of the Stripe objects a transaction decides about and writes (pipelines.store.locks):
# a stripe-events batch (ingest.py) and a reconcile repair (reconcile_tables.py) hold their objects'.
OBJECT_LOCK = "stripe-object"


@dataclass
class Plan:
    """What one transaction will write, gathered from the projections that won."""
    rows: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    merge_rows: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    items_of: list[str] = field(default_factory=list)
    links: list[OrgLink] = field(default_factory=list)
    deleted_customers: list[tuple[str, int, bool]] = field(default_factory=list)  # (id, at, from its event)
    marks: dict[str, tuple[str, int, str, bool]] = field(default_factory=dict)  # id -> (type, created, event, retrieved)

    def add(self, p: Projection, mark: Mark, object_id: str, object_type: str, *, retrieved: bool = False,
            deleted_at: int | None = None) -> None:
        """A projection that won. `deleted_at`: the time of the customer.deleted event that carried
        it (final); otherwise a deletion learnt from the object is dated by `mark`."""
        for table, rows in p.rows.items():
            self.rows[table].extend(rows)
        for table, rows in p.merge_rows.items():
            self.merge_rows[table].extend(rows)
        self.items_of.extend(p.items_of)
        self.links.extend(p.links)
        if p.deleted_customer:
            final = deleted_at is not None
            self.deleted_customers.append((p.deleted_customer, deleted_at if final else mark[0], final))
        self.marks[object_id] = (object_type, mark[0], mark[1], retrieved)

    def customers_touched(self) -> set[str]:
        touched = {r["customer_id"] for r in self.rows.get("stripe_subscriptions", []) if r.get("customer_id")}
        touched.update(link.customer_id for link in self.links)
        touched.update(r["customer_id"] for r in self.rows.get("stripe_customers", []))
        return touched


def write(conn: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    """Every row of the plan, then what follows from them (links, deletions, watermarks)."""
    write_rows(conn, plan)
    write_consequences(conn, plan)


def write_rows(conn: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    """The projected rows alone, table by table in write order (replacing, then filling gaps)."""
    for table in TABLES:
        upsert(conn, table.name, (table.key,), plan.rows.get(table.name, []))
    if plan.items_of:
        _drop_removed_items(conn, plan.items_of, plan.rows.get("stripe_subscription_items", []))
    for table in TABLES:
        upsert(conn, table.name, (table.key,), plan.merge_rows.get(table.name, []), merge=True)
    _refund_customers(conn, plan)


def write_consequences(conn: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    _link_organisations(conn, plan.links, plan.customers_touched())
    _cascade_deleted_customers(conn, plan.deleted_customers)
    _write_watermarks(conn, plan.marks)


# ---- rows --------------------------------------------------------------------------------------

def _arrow_type(sql_type: str, values: list) -> pa.DataType:
    t = sql_type.upper()
    if t.startswith("TIMESTAMP"):  # Stripe's epoch seconds, or our own datetimes
        first = next((v for v in values if v is not None), None)
        return pa.timestamp("us" if isinstance(first, datetime) else "s", tz="UTC")
    if t in ("BIGINT", "INTEGER", "HUGEINT"):
        return pa.int64()
    if t == "BOOLEAN":
        return pa.bool_()
    return pa.string()


def _unique(rows: Iterable[dict], key: tuple[str, ...]) -> list[dict]:
    last: dict[tuple, dict] = {}
    for r in rows:
        last[tuple(r[k] for k in key)] = r  # the later row (a later event) wins
    return list(last.values())


def upsert(conn: duckdb.DuckDBPyConnection, table: str, key: tuple[str, ...], rows: list[dict], *,
           merge: bool = False) -> int:
    """Rows of `table` in one statement (replace, or fill gaps when `merge`); returns how many."""
    if not rows:
        return 0
    rows = _unique(rows, key)
    d = dialect_of(conn)
    if d is not DUCKDB:
        # Concurrent writers lock conflicting rows in the order they insert them: one order for all.
        rows.sort(key=lambda r: tuple(r[k] for k in key))
    types = column_types(conn, table)
    if merge:
        columns = [c for c in types if any(c in r for r in rows) and c != "updated_at"]
    else:
        columns = [c for c in types if c != "updated_at"]
    batch = arrow(**{c: (_arrow_type(types[c], vals), vals) for c in columns
                     for vals in [[r.get(c) for r in rows]]})
    updates = []
    for c in columns:
        if c in key:
            continue
        if merge:
            updates.append(f"{c} = {table}.{c} OR excluded.{c}" if c == "deleted"
                           else f"{c} = COALESCE({table}.{c}, excluded.{c})")
        elif c in STICKY:
            updates.append(f"{c} = COALESCE(excluded.{c}, {table}.{c})")
        else:
            updates.append(f"{c} = excluded.{c}")
    stamped = "updated_at" in types
    if stamped:
        updates.append("updated_at = now()")
        batch = batch.append_column("updated_at", pa.array([datetime.now(timezone.utc)] * len(rows), TS))
    action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
    names = batch.column_names
    with_rows(conn, f"INSERT INTO {table} ({', '.join(names)}) "
                    f"SELECT {', '.join(d.from_text(c, types.get(c, '')) for c in names)} FROM rows "
                    f"ON CONFLICT ({', '.join(key)}) {action}", batch)
    return len(rows)


def _drop_removed_items(conn: duckdb.DuckDBPyConnection, subscription_ids: list[str], items: list[dict]) -> None:
    """The items each subscription keeps (a subscription that keeps none: one row with no item)."""
    kept: dict[str, list[str]] = {sid: [] for sid in subscription_ids}
    for r in items:
        kept.setdefault(r["subscription_id"], []).append(r["item_id"])
    pairs = [(sid, iid) for sid, ids in kept.items() for iid in (ids or [None])]
    with_rows(conn, "DELETE FROM stripe_subscription_items WHERE subscription_id IN (SELECT subscription_id FROM rows) "
                    "AND item_id NOT IN (SELECT item_id FROM rows WHERE item_id IS NOT NULL)",
              arrow(subscription_id=(STR, [s for s, _ in pairs]), item_id=(STR, [i for _, i in pairs])))


def _refund_customers(conn: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    """A refund belongs to its charge's customer. Whichever of the two was written last, the refund
    row takes the customer from the charge's row, so the result does not depend on delivery order."""
    charges = {r.get("charge_id") for rows in (plan.rows.get("stripe_payments", []),
                                               plan.merge_rows.get("stripe_payments", []))
               for r in rows if r.get("kind") in (PaymentKind.CHARGE, PaymentKind.REFUND)}
    charges.discard(None)
    if not charges:
        return
    with_rows(conn, f"UPDATE stripe_payments r SET customer_id = c.customer_id, updated_at = now() "
                    f"FROM stripe_payments c WHERE c.payment_id = r.charge_id AND c.kind = '{PaymentKind.CHARGE}' "
                    f"AND r.kind = '{PaymentKind.REFUND}' AND c.customer_id IS NOT NULL "
                    f"AND r.customer_id IS DISTINCT FROM c.customer_id AND r.charge_id IN (SELECT charge_id FROM rows)",
              arrow(charge_id=(STR, sorted(charges))))


# ---- what follows from the rows ------------------------------------------------------------------

def _link_organisations(conn: duckdb.DuckDBPyConnection, links: list[OrgLink], customers: set[str]) -> None:
    if links:
        link_rows = arrow(customer_id=(STR, [x.customer_id for x in links]),
                          organization_id=(STR, [x.organization_id for x in links]),
                          subscription_id=(STR, [x.subscription_id for x in links]),
                          billing_email=(STR, [x.billing_email for x in links]))
        d = dialect_of(conn)
        with_rows(
            conn, "INSERT INTO stripe_customers (customer_id, organization_id, billing_email, deleted, updated_at) "
            f"SELECT customer_id, {d.arg_max('organization_id', 'organization_id IS NOT NULL')}, "
            f"{d.arg_max('billing_email', 'billing_email IS NOT NULL')}, false, now() FROM rows GROUP BY customer_id "
            "ON CONFLICT (customer_id) DO UPDATE SET "
            "organization_id = COALESCE(excluded.organization_id, stripe_customers.organization_id), "
            "billing_email = COALESCE(stripe_customers.billing_email, excluded.billing_email), updated_at = now()",
            link_rows)
        with_rows(
            conn, "UPDATE stripe_subscriptions s SET organization_id = l.organization_id, updated_at = now() "
            f"FROM (SELECT subscription_id, {d.any_value('organization_id')} AS organization_id FROM rows "
            "      WHERE subscription_id IS NOT NULL AND organization_id IS NOT NULL GROUP BY subscription_id) l "
            "WHERE s.subscription_id = l.subscription_id "
            "AND s.organization_id IS DISTINCT FROM l.organization_id", link_rows)
    if customers:
        with_rows(
            conn, "UPDATE stripe_subscriptions s SET organization_id = c.organization_id, updated_at = now() "
            "FROM stripe_customers c WHERE s.customer_id = c.customer_id AND s.organization_id IS NULL "
            "AND c.organization_id IS NOT NULL AND c.customer_id IN (SELECT customer_id FROM rows)",
            arrow(customer_id=(STR, sorted(customers))))


def _cascade_deleted_customers(conn: duckdb.DuckDBPyConnection, deleted: list[tuple[str, int, bool]]) -> None:
    """deleted_at is the customer.deleted event's time; learnt first from a re-retrieve (which
    gives no time), it is the triggering event's until the customer.deleted event arrives."""
    if not deleted:
        return
    best: dict[str, tuple[bool, int]] = {}
    for cid, at, final in deleted:
        best[cid] = max(best.get(cid, (False, 0)), (final, at))
    gone = pa.table({"customer_id": pa.array(list(best), pa.string()),
                     "gone_at": pa.array([at for _, at in best.values()], pa.timestamp("s", tz="UTC")),
                     "final": pa.array([final for final, _ in best.values()], pa.bool_())})
    with_rows(
        conn, "INSERT INTO stripe_customers (customer_id, deleted, deleted_at, updated_at) "
        "SELECT customer_id, true, gone_at, now() FROM rows "
        "ON CONFLICT (customer_id) DO UPDATE SET deleted = true, "
        "deleted_at = COALESCE(stripe_customers.deleted_at, excluded.deleted_at), updated_at = now()", gone)
    with_rows(
        conn, "UPDATE stripe_customers c SET deleted_at = r.gone_at FROM rows r "
        "WHERE r.final AND c.customer_id = r.customer_id", gone)
    with_rows(
        conn, f"UPDATE stripe_subscriptions s SET status = '{SubscriptionStatus.CANCELED}', "
        "canceled_at = COALESCE(s.canceled_at, r.gone_at), ended_at = COALESCE(s.ended_at, r.gone_at), "
        f"updated_at = now() FROM rows r WHERE s.customer_id = r.customer_id "
        f"AND s.status NOT IN {sql_in(SubscriptionStatus.ENDED)}", gone)


def _write_watermarks(conn: duckdb.DuckDBPyConnection, marks: dict[str, tuple[str, int, str, bool]]) -> None:
    if not marks:
        return
    now = datetime.now(timezone.utc)
    values: list[tuple[str, tuple[str, int, str, bool]]] = list(marks.items())
    batch = arrow(object_id=(STR, [oid for oid, _ in values]), object_type=(STR, [m[0] for _, m in values]),
                  event_created=(pa.timestamp("s", tz="UTC"), [m[1] for _, m in values]),
                  event_id=(STR, [m[2] for _, m in values]),
                  retrieved_at=(TS, [now if m[3] else None for _, m in values]))
    with_rows(
        conn, "INSERT INTO stripe_object_watermarks (object_id, object_type, event_created, event_id, retrieved_at, "
        "updated_at) SELECT object_id, object_type, event_created, event_id, retrieved_at, now() FROM rows "
        "ON CONFLICT (object_id) DO UPDATE SET event_created = excluded.event_created, "
        "event_id = excluded.event_id, "
        "retrieved_at = COALESCE(excluded.retrieved_at, stripe_object_watermarks.retrieved_at), "
        "updated_at = now() "
        # compare-and-set: a watermark only moves forward (an equal one is a re-retrieve of the same
        # state, which records its retrieved_at), whichever writer commits last
        "WHERE (excluded.event_created, excluded.event_id) >= "
        "(stripe_object_watermarks.event_created, stripe_object_watermarks.event_id)", batch)


def ids_table(column: str, ids: Iterable[Any]) -> pa.Table:
    """A one-column Arrow table of ids, for `with_rows`."""
    return arrow(**{column: (STR, list(ids))})
