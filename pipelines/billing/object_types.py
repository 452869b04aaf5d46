"""Every Stripe object type billing keeps, in one place.

An `ObjectType` says where the object's rows land (table, key, and the rows of a shared table
that are its own), how an object becomes rows (its projector, projections.py), which events carry
it, where the API retrieves and lists it, which other objects an event about it touches, and the
columns reconciliation compares. The stripe-events ingestion (ingest.py), the retriever
(retrieve.py), the asset specs (assets.py) and reconciliation (reconcile.py, reconcile_tables.py)
read this module and nothing else about a type.

Reconciliation's expected row is the projector's row (the same function ingestion runs) restricted
to the compared columns, so the two cannot disagree on what a column holds.

Adding a type: its table (the DDL in tables.py and a `Table` here), its projector, and an entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pipelines.billing import projections as pj
from pipelines.billing.projections import Projection, ProjectionError
from pipelines.billing.vocab import PaymentKind

Projector = Callable[[dict, Projection, "str | None"], None]


@dataclass(frozen=True)
class Table:
    name: str
    key: str
    description: str   # the asset's description


# Every table the projections write, in write order (rows of later tables refer to earlier ones).
TABLES: tuple[Table, ...] = (
    Table("stripe_customers", "customer_id",
          "Stripe customers, with the organisation each bills and its billing email."),
    Table("stripe_products", "product_id", "Stripe products (name, active, metadata), one row per product."),
    Table("stripe_prices", "price_id", "Stripe prices: product, currency, unit amount, recurring interval, active."),
    Table("stripe_subscriptions", "subscription_id",
          "Subscriptions as Stripe has them (status a closed set), linked to their organisation."),
    Table("stripe_subscription_items", "item_id",
          "Each subscription's items: price, product, quantity (seats), period."),
    Table("stripe_invoices", "invoice_id",
          "Stripe invoices: status, amounts due and paid, payment attempts, subscription and period."),
    Table("stripe_payment_methods", "payment_method_id", "Payment methods and the customer each is attached to."),
    Table("stripe_payments", "payment_id", "Money movements: one row per PaymentIntent, charge, refund and dispute."),
    Table("stripe_credit_notes", "credit_note_id",
          "Credit notes: the invoice each adjusts, amount, reason, status (issued or void)."),
)
TABLE = {t.name: t for t in TABLES}

# Columns a payload that does not name them never clears (the organisation a customer bills may
# come from Checkout): the writer keeps the stored value, reconciliation does not compare a NULL.
STICKY = frozenset({"organization_id"})

# A reference to another object: (its type, the path of fields that holds its id).
Ref = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class ObjectType:
    name: str                             # Stripe's `object` value
    path: str                             # the API's list path; retrieve is path/{id}
    project: Projector
    events: tuple[str, ...]               # the event types whose data.object it is
    table: str | None = None              # the table holding its row; None: it only feeds other rows
    rows_where: str | None = None         # its rows in a table shared with other types
    compared: tuple[str, ...] = ()        # the columns reconciliation compares (none: not reconciled)
    list_params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    expand: tuple[str, ...] = ()          # retrieved with these expanded (what the table needs)
    touches: tuple[Ref, ...] = ()         # reconciled objects an event about this one changes
    soft_delete: bool = False             # gone from Stripe: its row is flagged `deleted`, not removed
    children: tuple[str, str] | None = None  # (table, column) of rows that go when its row goes

    @property
    def key(self) -> str:
        assert self.table is not None, f"{self.name} has no table of its own"
        return TABLE[self.table].key

    def live_where(self) -> str | None:
        """Which of its rows stand for a live object (a customer flagged deleted does not)."""
        parts = [w for w in (self.rows_where, "NOT deleted" if self.soft_delete else None) if w]
        return " AND ".join(parts) or None


def _events(prefix: str, *suffixes: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{s}" for s in suffixes)


def _kind(kind: PaymentKind) -> str:
    return f"kind = '{kind.value}'"


OBJECT_TYPES: tuple[ObjectType, ...] = (
    # the reconciled types first, in sweep order: customers before the rows that refer to them
    ObjectType("customer", "/v1/customers", pj.customer, _events("customer", "created", "updated", "deleted"),
               table="stripe_customers", compared=("billing_email", "name", "deleted", "organization_id"),
               soft_delete=True),
    ObjectType("subscription", "/v1/subscriptions", pj.subscription,
               _events("customer.subscription", "created", "updated", "deleted", "paused", "resumed",
                       "trial_will_end", "pending_update_applied", "pending_update_expired"),
               table="stripe_subscriptions",
               compared=("customer_id", "status", "cancel_at_period_end", "current_period_end", "quantity",
                         "organization_id"),
               list_params=MappingProxyType({"status": "all"}),
               children=("stripe_subscription_items", "subscription_id")),
    ObjectType("invoice", "/v1/invoices", pj.invoice,
               _events("invoice", "created", "finalized", "paid", "payment_failed", "payment_succeeded", "voided",
                       "marked_uncollectible", "updated", "payment_action_required", "overdue"),
               table="stripe_invoices",
               compared=("customer_id", "subscription_id", "status", "amount_due", "amount_paid", "currency"),
               touches=(("subscription", ("parent", "subscription_details", "subscription")),
                        ("subscription", ("subscription",)))),
    ObjectType("payment_intent", "/v1/payment_intents", pj.payment_intent,
               _events("payment_intent", "created", "succeeded", "payment_failed", "canceled", "processing",
                       "requires_action"),
               table="stripe_payments", rows_where=_kind(PaymentKind.PAYMENT_INTENT),
               compared=("amount", "currency", "status")),
    ObjectType("credit_note", "/v1/credit_notes", pj.credit_note, _events("credit_note", "created", "updated", "voided"),
               table="stripe_credit_notes",
               compared=("customer_id", "invoice_id", "status", "type", "amount", "currency", "voided_at"),
               touches=(("invoice", ("invoice",)),)),
    # ingested, not reconciled
    ObjectType("charge", "/v1/charges", pj.charge, _events("charge", "succeeded", "failed", "refunded", "updated",
                                                           "captured"),
               table="stripe_payments", rows_where=_kind(PaymentKind.CHARGE), expand=("refunds",),
               touches=(("payment_intent", ("payment_intent",)),)),
    ObjectType("refund", "/v1/refunds", pj.refund, (*_events("refund", "created", "updated", "failed"),
                                                    "charge.refund.updated"),
               table="stripe_payments", rows_where=_kind(PaymentKind.REFUND),
               touches=(("payment_intent", ("payment_intent",)),)),
    ObjectType("dispute", "/v1/disputes", pj.dispute, _events("charge.dispute", "created", "updated", "closed"),
               table="stripe_payments", rows_where=_kind(PaymentKind.DISPUTE),
               touches=(("payment_intent", ("payment_intent",)),)),
    ObjectType("payment_method", "/v1/payment_methods", pj.payment_method,
               _events("payment_method", "attached", "detached", "updated"), table="stripe_payment_methods"),
    ObjectType("setup_intent", "/v1/setup_intents", pj.setup_intent, ("setup_intent.succeeded",)),
    ObjectType("checkout.session", "/v1/checkout/sessions", pj.checkout_session, ("checkout.session.completed",),
               touches=(("subscription", ("subscription",)), ("customer", ("customer",)))),
    ObjectType("product", "/v1/products", pj.product, _events("product", "created", "updated", "deleted"),
               table="stripe_products"),
    ObjectType("price", "/v1/prices", pj.price, _events("price", "created", "updated", "deleted"),
               table="stripe_prices"),
)
BY_NAME: dict[str, ObjectType] = {t.name: t for t in OBJECT_TYPES}
BY_EVENT: dict[str, ObjectType] = {e: t for t in OBJECT_TYPES for e in t.events}
RECONCILED: tuple[ObjectType, ...] = tuple(t for t in OBJECT_TYPES if t.compared)


def is_handled(event_type: str) -> bool:
    return event_type in BY_EVENT


def project(object_type: ObjectType, obj: dict, event_type: str | None = None) -> Projection:
    """Rows for one object: carried by `event_type`, or None for the object as the API returns it
    now (a re-retrieve, a reconciliation). Raises ProjectionError naming a missing or mistyped field."""
    if obj.get("object") != object_type.name:
        where = event_type or "the API"
        raise ProjectionError(f"{where} carries a {obj.get('object')!r} object, expected {object_type.name!r}")
    p = Projection()
    object_type.project(obj, p, event_type)
    return p


def project_event(event_type: str, obj: dict) -> Projection:
    return project(BY_EVENT[event_type], obj, event_type)


def own_row(object_type: ObjectType, p: Projection, object_id: str) -> dict | None:
    """The object's own row among a projection's (a subscription's projection also holds items)."""
    key = object_type.key
    return next((r for r in p.rows.get(object_type.table or "", []) if r.get(key) == object_id), None)


def _at(obj: Mapping[str, Any], path: tuple[str, ...]) -> str | None:
    value: Any = obj
    for name in path:
        value = value.get(name) if isinstance(value, Mapping) else None
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def touched(obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(object type, id) of the reconciled objects a change to `obj` may have changed."""
    kind = BY_NAME.get(obj.get("object"))  # type: ignore[arg-type]
    if kind is None:
        return []
    out: list[tuple[str, str]] = []
    if kind.compared and isinstance(obj.get("id"), str):
        out.append((kind.name, obj["id"]))
    for target, path in kind.touches:
        found = _at(obj, path)
        if found and (target, found) not in out:
            out.append((target, found))
    return out
