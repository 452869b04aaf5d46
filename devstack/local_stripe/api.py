"""The /v1 routes: (method, path pattern) -> handler(em, path args, params) -> result.

A handler returns a stored (sparse) object, a deleted stub, or a ("list" | "search", ...) page;
the server renders it with every declared field and applies expand[]."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from devstack.local_stripe import billing, catalog, checkout, credit_notes, customers, payments
from devstack.local_stripe.app import Emulator
from devstack.local_stripe.errors import StripeError, invalid, missing
from devstack.local_stripe.listing import list_object, list_page, search_page, search_result
from devstack.local_stripe.wire import as_bool, as_str

Handler = Callable[[Emulator, dict[str, str], dict[str, Any]], Any]
ROUTES: list[tuple[str, re.Pattern[str], str, Handler]] = []


def route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        ROUTES.append((method, regex, pattern, fn))
        return fn
    return register


def find_route(method: str, path: str) -> tuple[Handler, dict[str, str], str] | None:
    """(handler, path arguments, route pattern), None for an unknown path."""
    allowed = False
    for m, regex, pattern, fn in ROUTES:
        match = regex.match(path)
        if match:
            if m == method:
                return fn, match.groupdict(), pattern
            allowed = True
    if allowed:
        raise invalid(f"Unrecognized request URL ({method}: {path}). This path does not accept {method}.")
    return None


class Page:
    def __init__(self, data: list[dict[str, Any]], has_more: bool, url: str, next_page: str | None = None,
                 search: bool = False) -> None:
        self.data, self.has_more, self.url, self.next_page, self.search = data, has_more, url, next_page, search

    def body(self, data: list[dict[str, Any]]) -> dict[str, Any]:
        if self.search:
            return search_result(data, self.next_page, self.url)
        return list_object(data, self.has_more, self.url)


def _eq(params: dict[str, Any], *names: str) -> Callable[[dict[str, Any]], bool] | None:
    wanted = {n: params[n] for n in names if params.get(n) not in (None, "")}
    for n in ("active",):
        if n in wanted:
            wanted[n] = as_bool(params, n)
    if not wanted:
        return None
    return lambda o: all(o.get(k) == v for k, v in wanted.items())


def _list(em: Emulator, name: str, url: str, params: dict[str, Any], predicate: Any = None,
          where: dict[str, list[Any]] | None = None) -> Page:
    """A page; a filter on an indexed field (customer, subscription...) walks that index."""
    table = em.store[name]
    if where is None:
        for field in table.readers:
            value = params.get(field)
            if isinstance(value, str) and value:
                where = {field: [value]}
                break
    data, more = list_page(table, params, url, predicate, where)
    return Page(data, more, url)


def _search(em: Emulator, name: str, url: str, params: dict[str, Any]) -> Page:
    data, next_page = search_page(em.store[name], name, params)
    return Page(data, next_page is not None, url, next_page, search=True)


def _retrieve(em: Emulator, name: str, oid: str) -> dict[str, Any]:
    if oid in em.deleted:
        return customers.deleted_stub(oid, em.deleted[oid])
    return em.get(name, oid)


# --- customers ------------------------------------------------------------------------------

@route("POST", "/v1/customers")
def _(em, a, p): return customers.create_customer(em, p)
@route("GET", "/v1/customers/search")
def _(em, a, p): return _search(em, "customer", "/v1/customers/search", p)
@route("GET", "/v1/customers")
def _(em, a, p): return _list(em, "customer", "/v1/customers", p, _eq(p, "email", "test_clock"))
@route("GET", "/v1/customers/{id}")
def _(em, a, p): return _retrieve(em, "customer", a["id"])
@route("POST", "/v1/customers/{id}")
def _(em, a, p): return customers.update_customer(em, em.get("customer", a["id"]), p)
@route("DELETE", "/v1/customers/{id}")
def _(em, a, p): return customers.delete_customer(em, em.get("customer", a["id"]))
@route("GET", "/v1/customers/{id}/payment_methods")
def _(em, a, p):
    em.get("customer", a["id"])
    return _list(em, "payment_method", f"/v1/customers/{a['id']}/payment_methods", p,
                 lambda o: o.get("customer") == a["id"] and (not p.get("type") or o["type"] == p["type"]),
                 where={"customer": [a["id"]]})
@route("GET", "/v1/customers/{id}/payment_methods/{pm}")
def _(em, a, p):
    pm = em.get("payment_method", a["pm"])
    if pm.get("customer") != a["id"]:
        raise missing("PaymentMethod", a["pm"])
    return pm


# --- products and prices --------------------------------------------------------------------

@route("POST", "/v1/products")
def _(em, a, p): return catalog.create_product(em, p)
@route("GET", "/v1/products/search")
def _(em, a, p): return _search(em, "product", "/v1/products/search", p)
@route("GET", "/v1/products")
def _(em, a, p):
    ids = p.get("ids")
    pred = _eq(p, "active")
    if ids:
        wanted = set(ids if isinstance(ids, list) else [ids])
        base = pred
        pred = lambda o: o["id"] in wanted and (base is None or base(o))  # noqa: E731
    return _list(em, "product", "/v1/products", p, pred)
@route("GET", "/v1/products/{id}")
def _(em, a, p): return _retrieve(em, "product", a["id"])
@route("POST", "/v1/products/{id}")
def _(em, a, p): return catalog.update_product(em, em.get("product", a["id"]), p)
@route("DELETE", "/v1/products/{id}")
def _(em, a, p): return catalog.delete_product(em, em.get("product", a["id"]))
@route("POST", "/v1/prices")
def _(em, a, p): return catalog.create_price(em, p)
@route("GET", "/v1/prices/search")
def _(em, a, p): return _search(em, "price", "/v1/prices/search", p)
@route("GET", "/v1/prices")
def _(em, a, p):
    base = _eq(p, "product", "active", "type", "currency")
    keys = p.get("lookup_keys")
    if keys:
        wanted = set(keys if isinstance(keys, list) else [keys])
        return _list(em, "price", "/v1/prices", p,
                     lambda o: o.get("lookup_key") in wanted and (base is None or base(o)))
    return _list(em, "price", "/v1/prices", p, base)
@route("GET", "/v1/prices/{id}")
def _(em, a, p): return em.get("price", a["id"])
@route("POST", "/v1/prices/{id}")
def _(em, a, p): return catalog.update_price(em, em.get("price", a["id"]), p)


# --- subscriptions --------------------------------------------------------------------------

SUB_STATUSES = ("active", "canceled", "incomplete", "incomplete_expired", "past_due", "paused", "trialing",
                "unpaid", "ended", "all")


@route("POST", "/v1/subscriptions")
def _(em, a, p): return billing.create_subscription(em, p)
@route("GET", "/v1/subscriptions/search")
def _(em, a, p): return _search(em, "subscription", "/v1/subscriptions/search", p)
@route("GET", "/v1/subscriptions")
def _(em, a, p):
    status = as_str(p, "status", None, choices=SUB_STATUSES)
    customer, price = p.get("customer"), p.get("price")

    def pred(o: dict[str, Any]) -> bool:
        if status is None and o["status"] in ("canceled", "incomplete_expired"):
            return False
        if status == "ended" and o["status"] not in ("canceled", "incomplete_expired"):
            return False
        if status not in (None, "all", "ended") and o["status"] != status:
            return False
        if customer and o["customer"] != customer:
            return False
        return not price or any(it["price"]["id"] == price for it in o["items"]["data"])
    return _list(em, "subscription", "/v1/subscriptions", p, pred)
@route("GET", "/v1/subscriptions/{id}")
def _(em, a, p): return em.get("subscription", a["id"])
@route("POST", "/v1/subscriptions/{id}")
def _(em, a, p): return billing.update_subscription(em, em.get("subscription", a["id"]), p)
@route("DELETE", "/v1/subscriptions/{id}")
def _(em, a, p): return billing.cancel_subscription(em, em.get("subscription", a["id"]), p)
@route("POST", "/v1/subscriptions/{id}/pause")
def _(em, a, p): return billing.pause_subscription(em, em.get("subscription", a["id"]), p)
@route("POST", "/v1/subscriptions/{id}/resume")
def _(em, a, p): return billing.resume_subscription(em, em.get("subscription", a["id"]), p)
@route("GET", "/v1/subscription_items")
def _(em, a, p):
    sub = em.get("subscription", as_str(p, "subscription", required=True), "subscription")
    items = list(reversed(sub["items"]["data"]))
    return Page(items, False, "/v1/subscription_items")
@route("POST", "/v1/subscription_items")
def _(em, a, p): return billing.add_item(em, p)
@route("GET", "/v1/subscription_items/{id}")
def _(em, a, p): return _item(em, a["id"])
@route("POST", "/v1/subscription_items/{id}")
def _(em, a, p):
    item = _item(em, a["id"])
    sub = em.get("subscription", item["subscription"])
    fields = {k: v for k, v in p.items() if k in ("quantity", "price", "metadata")}
    billing.update_subscription(em, sub, {"items": [{"id": a["id"], **fields}]})
    return _item(em, a["id"])


def _item(em: Emulator, item_id: str) -> dict[str, Any]:
    owner = em.item_owner.get(item_id)
    sub = em.store["subscription"].get(owner) if owner else None
    for it in (sub or {}).get("items", {}).get("data", []):
        if it["id"] == item_id:
            return it
    raise missing("subscription_item", item_id)


# --- invoices -------------------------------------------------------------------------------

@route("POST", "/v1/invoices")
def _(em, a, p): return billing.create_invoice(em, p)
@route("GET", "/v1/invoices")
def _(em, a, p):
    base = _eq(p, "customer", "status", "collection_method")
    sub = p.get("subscription")
    if sub:
        return _list(em, "invoice", "/v1/invoices", p,
                     lambda o: billing._subscription_of(o) == sub and (base is None or base(o)))
    return _list(em, "invoice", "/v1/invoices", p, base)
@route("GET", "/v1/invoices/{id}")
def _(em, a, p): return em.get("invoice", a["id"])
@route("POST", "/v1/invoices/{id}")
def _(em, a, p):
    from devstack.local_stripe.wire import as_metadata
    inv = em.get("invoice", a["id"])
    changes: dict[str, Any] = {"metadata": as_metadata(p, inv.get("metadata"))}
    if "description" in p:
        changes["description"] = as_str(p, "description") or None
    if "auto_advance" in p:
        changes["auto_advance"] = as_bool(p, "auto_advance")
    return em.update(inv, changes)
@route("POST", "/v1/invoices/{id}/finalize")
def _(em, a, p): return billing.finalize_invoice(em, em.get("invoice", a["id"]))
@route("POST", "/v1/invoices/{id}/pay")
def _(em, a, p):
    return billing.pay_invoice(em, em.get("invoice", a["id"]), payment_method=p.get("payment_method"),
                               off_session=bool(as_bool(p, "off_session", True)), raise_on_failure=True)
@route("POST", "/v1/invoices/{id}/void")
def _(em, a, p): return billing.void_invoice(em, em.get("invoice", a["id"]))
@route("POST", "/v1/invoices/{id}/mark_uncollectible")
def _(em, a, p): return billing.mark_uncollectible(em, em.get("invoice", a["id"]))
@route("GET", "/v1/invoices/{id}/lines")
def _(em, a, p):
    inv = em.get("invoice", a["id"])
    return Page(inv["lines"]["data"], False, f"/v1/invoices/{a['id']}/lines")


@route("POST", "/v1/credit_notes")
def _(em, a, p): return credit_notes.create_credit_note(em, p)
@route("GET", "/v1/credit_notes")
def _(em, a, p): return _list(em, "credit_note", "/v1/credit_notes", p, _eq(p, "customer", "invoice"))
@route("GET", "/v1/credit_notes/{id}")
def _(em, a, p): return em.get("credit_note", a["id"])
@route("POST", "/v1/credit_notes/{id}")
def _(em, a, p): return credit_notes.update_credit_note(em, em.get("credit_note", a["id"]), p)
@route("POST", "/v1/credit_notes/{id}/void")
def _(em, a, p): return credit_notes.void_credit_note(em, em.get("credit_note", a["id"]))


# --- payment methods and SetupIntents -------------------------------------------------------

@route("POST", "/v1/payment_methods")
def _(em, a, p): return customers.create_payment_method_from_params(em, p)
@route("GET", "/v1/payment_methods")
def _(em, a, p): return _list(em, "payment_method", "/v1/payment_methods", p, _eq(p, "customer", "type"))
@route("GET", "/v1/payment_methods/{id}")
def _(em, a, p): return em.get("payment_method", a["id"])
@route("POST", "/v1/payment_methods/{id}")
def _(em, a, p):
    from devstack.local_stripe.wire import as_metadata
    pm = em.get("payment_method", a["id"])
    return em.update(pm, {"metadata": as_metadata(p, pm.get("metadata"))})
@route("POST", "/v1/payment_methods/{id}/attach")
def _(em, a, p):
    return customers.attach(em, customers.resolve(em, a["id"], "id"),
                            as_str(p, "customer", required=True) or "")
@route("POST", "/v1/payment_methods/{id}/detach")
def _(em, a, p): return customers.detach(em, em.get("payment_method", a["id"]))
@route("POST", "/v1/setup_intents")
def _(em, a, p): return customers.create_setup_intent(em, p)
@route("GET", "/v1/setup_intents")
def _(em, a, p): return _list(em, "setup_intent", "/v1/setup_intents", p, _eq(p, "customer", "payment_method"))
@route("GET", "/v1/setup_intents/{id}")
def _(em, a, p): return em.get("setup_intent", a["id"])
@route("POST", "/v1/setup_intents/{id}/confirm")
def _(em, a, p): return customers.confirm_setup_intent(em, em.get("setup_intent", a["id"]), p)
@route("POST", "/v1/setup_intents/{id}/cancel")
def _(em, a, p): return customers.cancel_setup_intent(em, em.get("setup_intent", a["id"]), p)
@route("POST", "/v1/billing_portal/sessions")
def _(em, a, p): return customers.create_portal_session(em, p)


# --- payments -------------------------------------------------------------------------------

@route("POST", "/v1/payment_intents")
def _(em, a, p): return payments.create_payment_intent(em, p)
@route("GET", "/v1/payment_intents")
def _(em, a, p): return _list(em, "payment_intent", "/v1/payment_intents", p, _eq(p, "customer"))
@route("GET", "/v1/payment_intents/{id}")
def _(em, a, p): return em.get("payment_intent", a["id"])
@route("POST", "/v1/payment_intents/{id}/confirm")
def _(em, a, p): return payments.confirm_payment_intent(em, em.get("payment_intent", a["id"]), p)
@route("POST", "/v1/payment_intents/{id}/cancel")
def _(em, a, p): return payments.cancel_payment_intent(em, em.get("payment_intent", a["id"]), p)
@route("GET", "/v1/charges")
def _(em, a, p): return _list(em, "charge", "/v1/charges", p, _eq(p, "customer", "payment_intent"))
@route("GET", "/v1/charges/{id}")
def _(em, a, p): return em.get("charge", a["id"])
@route("POST", "/v1/refunds")
def _(em, a, p): return payments.create_refund(em, p)
@route("GET", "/v1/refunds")
def _(em, a, p): return _list(em, "refund", "/v1/refunds", p, _eq(p, "charge", "payment_intent"))
@route("GET", "/v1/refunds/{id}")
def _(em, a, p): return em.get("refund", a["id"])
@route("GET", "/v1/disputes")
def _(em, a, p): return _list(em, "dispute", "/v1/disputes", p, _eq(p, "charge", "payment_intent"))
@route("GET", "/v1/disputes/{id}")
def _(em, a, p): return em.get("dispute", a["id"])
@route("POST", "/v1/disputes/{id}/close")
def _(em, a, p): return payments.close_dispute(em, em.get("dispute", a["id"]), "lost")


# --- checkout -------------------------------------------------------------------------------

@route("POST", "/v1/checkout/sessions")
def _(em, a, p): return checkout.create_session(em, p)
@route("GET", "/v1/checkout/sessions")
def _(em, a, p):
    return _list(em, "checkout.session", "/v1/checkout/sessions", p,
                 _eq(p, "customer", "subscription", "status", "payment_intent"))
@route("GET", "/v1/checkout/sessions/{id}")
def _(em, a, p): return em.get("checkout.session", a["id"])
@route("POST", "/v1/checkout/sessions/{id}/expire")
def _(em, a, p): return checkout.expire_session(em, em.get("checkout.session", a["id"]))
@route("GET", "/v1/checkout/sessions/{id}/line_items")
def _(em, a, p):
    s = em.get("checkout.session", a["id"])
    return Page(list((s.get("line_items") or {}).get("data") or []), False,
                f"/v1/checkout/sessions/{a['id']}/line_items")


# --- events and test clocks -----------------------------------------------------------------

@route("GET", "/v1/events")
def _(em, a, p):
    data, more = em.events.page(p)
    return Page(data, more, "/v1/events")
@route("GET", "/v1/events/{id}")
def _(em, a, p):
    em.events.prune()
    return em.get("event", a["id"])
@route("POST", "/v1/test_helpers/test_clocks")
def _(em, a, p):
    from devstack.local_stripe.wire import as_int
    frozen = as_int(p, "frozen_time", required=True)
    return em.create("test_helpers.test_clock", {
        "frozen_time": frozen, "name": as_str(p, "name"), "status": "ready", "deletes_after": frozen + 30 * 86400,
        "status_details": {"advancing": None}}, event=True)
@route("GET", "/v1/test_helpers/test_clocks")
def _(em, a, p): return _list(em, "test_helpers.test_clock", "/v1/test_helpers/test_clocks", p)
@route("GET", "/v1/test_helpers/test_clocks/{id}")
def _(em, a, p): return em.get("test_helpers.test_clock", a["id"])
@route("DELETE", "/v1/test_helpers/test_clocks/{id}")
def _(em, a, p):
    clock = em.get("test_helpers.test_clock", a["id"])
    em.store["test_helpers.test_clock"].remove(clock["id"])
    return customers.deleted_stub(clock["id"], "test_helpers.test_clock")
@route("POST", "/v1/test_helpers/test_clocks/{id}/advance")
def _(em, a, p):
    from devstack.local_stripe.wire import as_int
    clock = em.get("test_helpers.test_clock", a["id"])
    target = as_int(p, "frozen_time", required=True)
    assert target is not None
    if target < clock["frozen_time"]:
        raise invalid("The frozen_time must be after the test clock's current frozen_time.", "frozen_time")
    clock = em.update(clock, {"frozen_time": target}, event=None)
    billing.run_due(em, clock["id"])
    em.emit("test_helpers.test_clock.ready", clock)
    return em.get("test_helpers.test_clock", clock["id"])


def error_for_unknown(method: str, path: str) -> StripeError:
    return StripeError(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path}). "
                       "The local Stripe does not implement this endpoint.")
