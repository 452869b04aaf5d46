"""Stripe objects -> rows of the billing tables. Pure functions, no database, no network.

`project(event_type, obj)` turns the object of a handled event (or the same object re-retrieved
at the pinned API version) into a `Projection`: full rows for the tables Stripe owns, plus the
few things that are merged rather than replaced (organisation links, payment methods seen
through a SetupIntent, prices embedded in subscription items). A field a handler needs that is
missing or of the wrong type raises `ProjectionError` naming it; the event is quarantined.

Field names follow the pinned version (2026-10-28.endive); fields that moved since older
versions (subscription periods to the items, invoice.subscription to invoice.parent) are read
from either place so a payload in an older version can still be projected where it must be.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from pipelines.billing.vocab import PaymentKind, SubscriptionStatus, values

SUBSCRIPTION_STATUSES = values(SubscriptionStatus)


class ProjectionError(ValueError):
    pass


@dataclass(frozen=True)
class OrgLink:
    """Checkout (or customer metadata) names the organisation a customer bills."""
    customer_id: str
    organization_id: str | None
    subscription_id: str | None = None
    billing_email: str | None = None


@dataclass
class Projection:
    rows: dict[str, list[dict]] = field(default_factory=dict)       # table -> rows replacing Stripe's columns
    merge_rows: dict[str, list[dict]] = field(default_factory=dict)  # table -> rows filling gaps only
    links: list[OrgLink] = field(default_factory=list)
    items_of: list[str] = field(default_factory=list)   # subscriptions whose item set `rows` replaces
    deleted_customer: str | None = None                  # customer.deleted: cascade to its subscriptions
    needs_subscription: str | None = None                # Checkout: the subscription it activated

    def add(self, table: str, row: dict) -> None:
        self.rows.setdefault(table, []).append(row)

    def merge(self, table: str, row: dict) -> None:
        self.merge_rows.setdefault(table, []).append(row)


# ---- field access that names what is wrong ----

# Epoch-second fields that become TIMESTAMPTZ; anything outside 1970..3058 is not a time.
TIME_FIELDS = frozenset({"created", "current_period_start", "current_period_end", "cancel_at", "canceled_at",
                         "ended_at", "trial_start", "trial_end", "start_date", "next_payment_attempt",
                         "period_start", "period_end", "due_date", "paid_at", "voided_at", "effective_at"})
MAX_TIME = 2**35
INT64 = 2**63


def _checked(value: Any, key: str, where: str) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if key in TIME_FIELDS and not 0 <= value < MAX_TIME:
            raise ProjectionError(f"{where}.{key} {value} is not a plausible time")
        if not -INT64 <= value < INT64:
            raise ProjectionError(f"{where}.{key} {value} does not fit 64 bits")
    return value


def _req(obj: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if value is None:
        raise ProjectionError(f"{where} lacks {key}")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProjectionError(f"{where}.{key} is {type(value).__name__}, expected {_name(kind)}")
    return _checked(value, key, where)


def _opt(obj: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProjectionError(f"{where}.{key} is {type(value).__name__}, expected {_name(kind)}")
    return _checked(value, key, where)


def _name(kind: type | tuple[type, ...]) -> str:
    return "/".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def _ref(obj: dict, key: str, where: str) -> str | None:
    """An expandable field: an id string, or the expanded object's id."""
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    raise ProjectionError(f"{where}.{key} is {type(value).__name__}, expected an id or an object with one")


def _dict(obj: dict, key: str, where: str) -> dict:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProjectionError(f"{where}.{key} is {type(value).__name__}, expected an object")
    return value


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _metadata(obj: dict, where: str) -> dict:
    meta = _dict(obj, "metadata", where)
    return meta


def _list_data(obj: dict, key: str, where: str) -> list[dict]:
    value = obj.get(key)
    if value is None:
        return []
    if isinstance(value, dict):
        data = value.get("data")
        if isinstance(data, list) and all(isinstance(x, dict) for x in data):
            return data
    raise ProjectionError(f"{where}.{key} is not a list object with data")


# ---- one projector per object type ----

def customer(obj: dict, p: Projection, event_type: str | None = None) -> None:
    w = "customer"
    deleted = event_type == "customer.deleted"
    cid = _req(obj, "id", str, w)
    if obj.get("deleted") is True and set(obj) <= {"id", "object", "deleted"}:
        # the stub Stripe returns for a deleted customer: keep the last known fields
        p.merge("stripe_customers", {"customer_id": cid, "deleted": True})
        p.deleted_customer = cid
        return
    meta = _metadata(obj, w)
    org = meta.get("organization_id")
    p.add("stripe_customers", {
        "customer_id": cid,
        "organization_id": org if isinstance(org, str) else None,
        "billing_email": _opt(obj, "email", str, w),
        "name": _opt(obj, "name", str, w),
        "description": _opt(obj, "description", str, w),
        "currency": _opt(obj, "currency", str, w),
        "default_payment_method": _ref(_dict(obj, "invoice_settings", w), "default_payment_method",
                                       "customer.invoice_settings"),
        "deleted": deleted,
        "livemode": _opt(obj, "livemode", bool, w),
        "created": _opt(obj, "created", int, w),
        "metadata": _json(meta),
        "raw": _json(obj),
    })
    if deleted:  # customer.deleted carries the customer as it was when deleted: its final state
        p.deleted_customer = cid


def subscription(obj: dict, p: Projection, event_type: str | None = None) -> None:
    w = "subscription"
    sid = _req(obj, "id", str, w)
    customer_id = _ref(obj, "customer", w)
    if customer_id is None:
        raise ProjectionError("subscription lacks customer")
    status = _req(obj, "status", str, w)
    if status not in SUBSCRIPTION_STATUSES:
        raise ProjectionError(f"subscription.status {status!r} is not one of Stripe's eight")
    items = _list_data(obj, "items", w)
    item_rows = []
    for i, item in enumerate(items):
        iw = f"subscription.items[{i}]"
        price = _dict(item, "price", iw) or _dict(item, "plan", iw)
        price_id = _req(price, "id", str, f"{iw}.price") if price else None
        if price:
            _price(price, p, merge=True)
        item_rows.append({
            "item_id": _req(item, "id", str, iw),
            "subscription_id": sid,
            "price_id": price_id,
            "product_id": _ref(price, "product", f"{iw}.price") if price else None,
            "quantity": _opt(item, "quantity", int, iw),
            "current_period_start": _opt(item, "current_period_start", int, iw),
            "current_period_end": _opt(item, "current_period_end", int, iw),
            "created": _opt(item, "created", int, iw),
        })
    starts = [r["current_period_start"] for r in item_rows if r["current_period_start"] is not None]
    ends = [r["current_period_end"] for r in item_rows if r["current_period_end"] is not None]
    quantities = [r["quantity"] for r in item_rows if r["quantity"] is not None]
    meta = _metadata(obj, w)
    org = meta.get("organization_id")
    pause = _dict(obj, "pause_collection", w)
    p.add("stripe_subscriptions", {
        "subscription_id": sid,
        "customer_id": customer_id,
        "organization_id": org if isinstance(org, str) else None,
        "status": status,
        "quantity": sum(quantities) if quantities else _opt(obj, "quantity", int, w),
        "cancel_at_period_end": _opt(obj, "cancel_at_period_end", bool, w),
        "cancel_at": _opt(obj, "cancel_at", int, w),
        "canceled_at": _opt(obj, "canceled_at", int, w),
        "ended_at": _opt(obj, "ended_at", int, w),
        # Since 2025-03-31 each item carries its period (before, the subscription did). Items may end
        # on different dates (mixed intervals under flexible billing mode): the subscription's end
        # is its next renewal, the earliest item end; each item's own period is in its row.
        "current_period_start": min(starts) if starts else _opt(obj, "current_period_start", int, w),
        "current_period_end": min(ends) if ends else _opt(obj, "current_period_end", int, w),
        "trial_start": _opt(obj, "trial_start", int, w),
        "trial_end": _opt(obj, "trial_end", int, w),
        "start_date": _opt(obj, "start_date", int, w),
        "pause_behavior": _opt(pause, "behavior", str, "subscription.pause_collection"),
        "latest_invoice": _ref(obj, "latest_invoice", w),
        "default_payment_method": _ref(obj, "default_payment_method", w),
        "collection_method": _opt(obj, "collection_method", str, w),
        "currency": _opt(obj, "currency", str, w),
        "livemode": _opt(obj, "livemode", bool, w),
        "created": _opt(obj, "created", int, w),
        "metadata": _json(meta),
        "raw": _json(obj),
    })
    p.items_of.append(sid)
    for row in item_rows:
        p.add("stripe_subscription_items", row)


def _price(obj: dict, p: Projection, merge: bool = False) -> None:
    w = "price"
    if obj.get("deleted") is True:
        p.merge("stripe_prices", {"price_id": _req(obj, "id", str, w), "deleted": True})
        return
    recurring = _dict(obj, "recurring", w)
    row = {
        "price_id": _req(obj, "id", str, w),
        "product_id": _ref(obj, "product", w),
        "active": _opt(obj, "active", bool, w),
        "currency": _opt(obj, "currency", str, w),
        "unit_amount": _opt(obj, "unit_amount", int, w) if "unit_amount" in obj else _opt(obj, "amount", int, w),
        "type": _opt(obj, "type", str, w),
        "recurring_interval": _opt(recurring, "interval", str, "price.recurring") if recurring
        else _opt(obj, "interval", str, w),
        "recurring_interval_count": _opt(recurring, "interval_count", int, "price.recurring") if recurring
        else _opt(obj, "interval_count", int, w),
        "lookup_key": _opt(obj, "lookup_key", str, w),
        "nickname": _opt(obj, "nickname", str, w),
        "deleted": obj.get("deleted") is True,
        "livemode": _opt(obj, "livemode", bool, w),
        "created": _opt(obj, "created", int, w),
        "metadata": _json(_metadata(obj, w)),
        "raw": _json(obj),
    }
    (p.merge if merge else p.add)("stripe_prices", row)


def price(obj: dict, p: Projection, event_type: str | None = None) -> None:
    _price(obj, p)


def product(obj: dict, p: Projection, event_type: str | None = None) -> None:
    w = "product"
    if obj.get("deleted") is True:
        p.merge("stripe_products", {"product_id": _req(obj, "id", str, w), "deleted": True})
        return
    p.add("stripe_products", {
        "product_id": _req(obj, "id", str, w),
        "name": _opt(obj, "name", str, w),
        "description": _opt(obj, "description", str, w),
        "active": _opt(obj, "active", bool, w),
        "deleted": obj.get("deleted") is True,
        "livemode": _opt(obj, "livemode", bool, w),
        "created": _opt(obj, "created", int, w),
        "metadata": _json(_metadata(obj, w)),
        "raw": _json(obj),
    })


def invoice(obj: dict, p: Projection, event_type: str | None = None) -> None:
    w = "invoice"
    parent = _dict(obj, "parent", w)
    details = _dict(parent, "subscription_details", "invoice.parent")
    subscription_id = _ref(details, "subscription", "invoice.parent.subscription_details") or \
        _ref(obj, "subscription", w)
    transitions = _dict(obj, "status_transitions", w)
    p.add("stripe_invoices", {
        "invoice_id": _req(obj, "id", str, w),
        "customer_id": _ref(obj, "customer", w),
        "subscription_id": subscription_id,
        "status": _opt(obj, "status", str, w),
        "billing_reason": _opt(obj, "billing_reason", str, w),
        "collection_method": _opt(obj, "collection_method", str, w),
        "currency": _req(obj, "currency", str, w),
        "amount_due": _req(obj, "amount_due", int, w),
        "amount_paid": _opt(obj, "amount_paid", int, w),
        "amount_remaining": _opt(obj, "amount_remaining", int, w),
        "total": _opt(obj, "total", int, w),
        "attempt_count": _opt(obj, "attempt_count", int, w),
        "next_payment_attempt": _opt(obj, "next_payment_attempt", int, w),
        "period_start": _opt(obj, "period_start", int, w),
        "period_end": _opt(obj, "period_end", int, w),
        "due_date": _opt(obj, "due_date", int, w),
        "paid_at": _opt(transitions, "paid_at", int, "invoice.status_transitions"),
        "number": _opt(obj, "number", str, w),
        "hosted_invoice_url": _opt(obj, "hosted_invoice_url", str, w),
        "livemode": _opt(obj, "livemode", bool, w),
        "created": _opt(obj, "created", int, w),
        "raw": _json(obj),
    })


def _payment(p: Projection, kind: PaymentKind, obj: dict, w: str, merge: bool = False, **cols) -> None:
    (p.merge if merge else p.add)("stripe_payments", {
        "payment_id": _req(obj, "id", str, w),
        "kind": kind.value,
        "amount": _req(obj, "amount", int, w),
        "currency": _req(obj, "currency", str, w),
        "status": _opt(obj, "status", str, w),
        "failure_code": None, "failure_message": None, "reason": None, "amount_refunded": None,
        "invoice_id": None, "customer_id": None, "payment_intent_id": None, "charge_id": None,
        "livemode": _opt(obj, "livemode", bool, w),
        "created": _opt(obj, "created", int, w),
        "raw": _json(obj),
        **cols,
    })


def payment_intent(obj: dict, p: Projection, event_type: str | None = None) -> None:
    w = "payment_intent"
    error = _dict(obj, "last_payment_error", w)
    ew = "payment_intent.last_payment_error"
    _payment(p, PaymentKind.PAYMENT_INTENT, obj, w,
             failure_code=_opt(error, "decline_code", str, ew) or _opt(error, "code", str, ew),
             failure_message=_opt(error, "message", str, ew),
             reason=_opt(obj, "cancellation_reason", str, w),
             invoice_id=_ref(obj, "invoice", w),  # gone since 2025-03-31; invoices list their payments
             customer_id=_ref(obj, "customer", w),
             payment_intent_id=obj.get("id"))


def charge(obj: dict, p: Projection, event_type: str | None = None) -> None:
    w = "charge"
    _payment(p, PaymentKind.CHARGE, obj, w,
             failure_code=_opt(obj, "failure_code", str, w),
             failure_message=_opt(obj, "failure_message", str, w),
             amount_refunded=_opt(obj, "amount_refunded", int, w),
             invoice_id=_ref(obj, "invoice", w),
             customer_id=_ref(obj, "customer", w),
             payment_intent_id=_ref(obj, "payment_intent", w),
             charge_id=obj.get("id"))
    # a snapshot as of this charge event: fills gaps only, the refund's own events own its row
    for refund_obj in _list_data(obj, "refunds", w):
        refund(refund_obj, p, customer_id=_ref(obj, "customer", w), merge=True)


def refund(obj: dict, p: Projection, event_type: str | None = None, *, customer_id: str | None = None,
           merge: bool = False) -> None:
    """A refund names no customer: its charge's, filled by the writer from the charge's row."""
    w = "refund"
    _payment(p, PaymentKind.REFUND, obj, w, merge=merge,
             failure_code=_opt(obj, "failure_reason", str, w),
             reason=_opt(obj, "reason", str, w),
             customer_id=customer_id,
             payment_intent_id=_ref(obj, "payment_intent", w),
             charge_id=_ref(obj, "charge", w))


def dispute(obj: dict, p: Projection, event_type: str | None = None) -> None:
    w = "dispute"
    _payment(p, PaymentKind.DISPUTE, obj, w,
             reason=_opt(obj, "reason", str, w),
             payment_intent_id=_ref(obj, "payment_intent", w),
             charge_id=_ref(obj, "charge", w))


def credit_note(obj: dict, p: Projection, event_type: str | None = None) -> None:
    w = "credit_note"
    p.add("stripe_credit_notes", {
        "credit_note_id": _req(obj, "id", str, w),
        "customer_id": _ref(obj, "customer", w),
        "invoice_id": _ref(obj, "invoice", w),
        "number": _opt(obj, "number", str, w),
        "status": _req(obj, "status", str, w),
        "type": _opt(obj, "type", str, w),
        "amount": _req(obj, "amount", int, w),
        "currency": _req(obj, "currency", str, w),
        "reason": _opt(obj, "reason", str, w),
        "memo": _opt(obj, "memo", str, w),
        "effective_at": _opt(obj, "effective_at", int, w),
        "voided_at": _opt(obj, "voided_at", int, w),
        "livemode": _opt(obj, "livemode", bool, w),
        "created": _opt(obj, "created", int, w),
        "metadata": _json(_metadata(obj, w)),
        "raw": _json(obj),
    })


def payment_method(obj: dict, p: Projection, event_type: str | None = None) -> None:
    w = "payment_method"
    card = _dict(obj, "card", w)
    cw = "payment_method.card"
    p.add("stripe_payment_methods", {
        "payment_method_id": _req(obj, "id", str, w),
        "customer_id": _ref(obj, "customer", w),
        "type": _req(obj, "type", str, w),
        "card_brand": _opt(card, "brand", str, cw),
        "card_last4": _opt(card, "last4", str, cw),
        "card_exp_month": _opt(card, "exp_month", int, cw),
        "card_exp_year": _opt(card, "exp_year", int, cw),
        "livemode": _opt(obj, "livemode", bool, w),
        "created": _opt(obj, "created", int, w),
        "raw": _json(obj),
    })


def setup_intent(obj: dict, p: Projection, event_type: str | None = None) -> None:
    w = "setup_intent"
    pm = _ref(obj, "payment_method", w)
    if pm is None:
        raise ProjectionError("setup_intent lacks payment_method")
    p.merge("stripe_payment_methods", {"payment_method_id": pm, "customer_id": _ref(obj, "customer", w),
                                       "setup_intent_id": _req(obj, "id", str, w)})
    if isinstance(obj.get("payment_method"), dict):
        payment_method(obj["payment_method"], p)


def checkout_session(obj: dict, p: Projection, event_type: str | None = None) -> None:
    """Warehouse's activation: the customer bills the organisation named by the session
    (client_reference_id, else metadata.organization_id); in subscription mode, that
    subscription is the organisation's."""
    w = "checkout.session"
    mode = _opt(obj, "mode", str, w)
    customer_id = _ref(obj, "customer", w)
    subscription_id = _ref(obj, "subscription", w)
    meta = _metadata(obj, w)
    org = _opt(obj, "client_reference_id", str, w) or _opt(meta, "organization_id", str, f"{w}.metadata")
    email = _opt(_dict(obj, "customer_details", w), "email", str, "checkout.session.customer_details")
    if mode == "subscription":
        if customer_id is None:
            raise ProjectionError("checkout.session in subscription mode lacks customer")
        if subscription_id is None:
            raise ProjectionError("checkout.session in subscription mode lacks subscription")
        # an expanded copy is a snapshot of unknown age: the subscription's own events (or one
        # fetch when none has arrived yet) give its state
        p.needs_subscription = subscription_id
    if customer_id is not None:
        p.links.append(OrgLink(customer_id, org, subscription_id if mode == "subscription" else None, email))
