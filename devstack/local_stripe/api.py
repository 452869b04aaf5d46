"""The /v1 routes: (method, path pattern) -> handler(em, path args, params) -> result.

A handler returns a stored (sparse) object, a deleted stub, or a ("list" | "search", ...) page;
the server renders it with every declared field and applies expand[].

The create / search / list / retrieve / update / delete routes of every object type come from one
table (`RESOURCES`); the actions particular to a type (finalize, pay, confirm, void...) are
written out below it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devstack.local_stripe import billing, catalog, checkout, credit_notes, customers, intents, invoices, payments
from devstack.local_stripe.app import Emulator
from devstack.local_stripe.errors import StripeError, invalid, missing
from devstack.local_stripe.listing import list_object, list_page, search_page, search_result
from devstack.local_stripe.wire import as_bool, as_int, as_metadata, as_str

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


# --- the object types' own routes -------------------------------------------------------------

Params = dict[str, Any]
Filter = Callable[[Params], Callable[[dict[str, Any]], bool] | None]

SUB_STATUSES = ("active", "canceled", "incomplete", "incomplete_expired", "past_due", "paused", "trialing",
                "unpaid", "ended", "all")


def _products(p: Params) -> Callable[[dict[str, Any]], bool] | None:
    base, ids = _eq(p, "active"), p.get("ids")
    if not ids:
        return base
    wanted = set(ids if isinstance(ids, list) else [ids])
    return lambda o: o["id"] in wanted and (base is None or base(o))


def _prices(p: Params) -> Callable[[dict[str, Any]], bool] | None:
    base, keys = _eq(p, "product", "active", "type", "currency"), p.get("lookup_keys")
    if not keys:
        return base
    wanted = set(keys if isinstance(keys, list) else [keys])
    return lambda o: o.get("lookup_key") in wanted and (base is None or base(o))


def _subscriptions(p: Params) -> Callable[[dict[str, Any]], bool]:
    status = as_str(p, "status", None, choices=SUB_STATUSES)
    customer, price = p.get("customer"), p.get("price")

    def pred(o: dict[str, Any]) -> bool:
        if status is None and o["status"] in billing.ENDED:
            return False
        if status == "ended" and o["status"] not in billing.ENDED:
            return False
        if status not in (None, "all", "ended") and o["status"] != status:
            return False
        if customer and o["customer"] != customer:
            return False
        return not price or any(it["price"]["id"] == price for it in o["items"]["data"])
    return pred


def _invoices(p: Params) -> Callable[[dict[str, Any]], bool] | None:
    base, sub = _eq(p, "customer", "status", "collection_method"), p.get("subscription")
    if not sub:
        return base
    return lambda o: invoices.subscription_of(o) == sub and (base is None or base(o))


def _update_invoice(em: Emulator, inv: dict[str, Any], p: Params) -> dict[str, Any]:
    changes: dict[str, Any] = {"metadata": as_metadata(p, inv.get("metadata"))}
    if "description" in p:
        changes["description"] = as_str(p, "description") or None
    if "auto_advance" in p:
        changes["auto_advance"] = as_bool(p, "auto_advance")
    return em.update(inv, changes)


def _update_metadata(em: Emulator, obj: dict[str, Any], p: Params) -> dict[str, Any]:
    return em.update(obj, {"metadata": as_metadata(p, obj.get("metadata"))})


def _create_clock(em: Emulator, p: Params) -> dict[str, Any]:
    frozen = as_int(p, "frozen_time", required=True)
    assert frozen is not None
    return em.create("test_helpers.test_clock", {
        "frozen_time": frozen, "name": as_str(p, "name"), "status": "ready", "deletes_after": frozen + 30 * 86400,
        "status_details": {"advancing": None}}, event=True)


def _delete_clock(em: Emulator, clock: dict[str, Any], p: Params) -> dict[str, Any]:
    em.store["test_helpers.test_clock"].remove(clock["id"])
    return customers.deleted_stub(clock["id"], "test_helpers.test_clock")


@dataclass(frozen=True)
class Resource:
    """One object type's routes: POST path, GET path[/search], GET/POST/DELETE path/{id}."""
    name: str
    path: str
    create: Callable[[Emulator, Params], Any] | None = None
    update: Callable[[Emulator, dict[str, Any], Params], Any] | None = None
    delete: Callable[[Emulator, dict[str, Any], Params], Any] | None = None
    filters: tuple[str, ...] = ()        # list parameters that must equal the object's field
    list_filter: Filter | None = None    # or a filter of its own
    search: bool = False
    stub_when_deleted: bool = False      # retrieving a deleted one answers its deleted stub


RESOURCES: tuple[Resource, ...] = (
    Resource("customer", "/v1/customers", customers.create_customer, customers.update_customer,
             lambda em, o, p: billing.delete_customer(em, o), filters=("email", "test_clock"), search=True,
             stub_when_deleted=True),
    Resource("product", "/v1/products", catalog.create_product, catalog.update_product,
             lambda em, o, p: catalog.delete_product(em, o), list_filter=_products, search=True,
             stub_when_deleted=True),
    Resource("price", "/v1/prices", catalog.create_price, catalog.update_price, list_filter=_prices, search=True),
    Resource("subscription", "/v1/subscriptions", billing.create_subscription, billing.update_subscription,
             billing.cancel_subscription, list_filter=_subscriptions, search=True),
    Resource("invoice", "/v1/invoices", invoices.create_invoice, _update_invoice, list_filter=_invoices),
    Resource("credit_note", "/v1/credit_notes", credit_notes.create_credit_note, credit_notes.update_credit_note,
             filters=("customer", "invoice")),
    Resource("payment_method", "/v1/payment_methods", customers.create_payment_method_from_params, _update_metadata,
             filters=("customer", "type")),
    Resource("setup_intent", "/v1/setup_intents", intents.create_setup_intent, filters=("customer", "payment_method")),
    Resource("payment_intent", "/v1/payment_intents", payments.create_payment_intent, filters=("customer",)),
    Resource("charge", "/v1/charges", filters=("customer", "payment_intent")),
    Resource("refund", "/v1/refunds", payments.create_refund, filters=("charge", "payment_intent")),
    Resource("dispute", "/v1/disputes", filters=("charge", "payment_intent")),
    Resource("checkout.session", "/v1/checkout/sessions", checkout.create_session,
             filters=("customer", "subscription", "status", "payment_intent")),
    Resource("test_helpers.test_clock", "/v1/test_helpers/test_clocks", _create_clock, delete=_delete_clock),
)


def _register(r: Resource) -> None:
    def create(em, a, p): return r.create(em, p)
    def search(em, a, p): return _search(em, r.name, f"{r.path}/search", p)
    def listing(em, a, p): return _list(em, r.name, r.path, p, r.list_filter(p) if r.list_filter else _eq(p, *r.filters))
    def retrieve(em, a, p): return _retrieve(em, r.name, a["id"]) if r.stub_when_deleted else em.get(r.name, a["id"])
    def update(em, a, p): return r.update(em, em.get(r.name, a["id"]), p)
    def delete(em, a, p): return r.delete(em, em.get(r.name, a["id"]), p)

    if r.create:
        route("POST", r.path)(create)
    if r.search:
        route("GET", f"{r.path}/search")(search)
    route("GET", r.path)(listing)
    route("GET", f"{r.path}/{{id}}")(retrieve)
    if r.update:
        route("POST", f"{r.path}/{{id}}")(update)
    if r.delete:
        route("DELETE", f"{r.path}/{{id}}")(delete)


for _resource in RESOURCES:
    _register(_resource)


# --- actions particular to a type ---------------------------------------------------------------

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


@route("POST", "/v1/subscriptions/{id}/pause")
def _(em, a, p): return billing.pause_subscription(em, em.get("subscription", a["id"]), p)
@route("POST", "/v1/subscriptions/{id}/resume")
def _(em, a, p): return billing.resume_subscription(em, em.get("subscription", a["id"]), p)
@route("POST", "/v1/subscription_items")
def _(em, a, p): return billing.add_item(em, p)
@route("GET", "/v1/subscription_items")
def _(em, a, p):
    sub = em.get("subscription", as_str(p, "subscription", required=True), "subscription")
    items = list(reversed(sub["items"]["data"]))
    return Page(items, False, "/v1/subscription_items")
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


@route("POST", "/v1/invoices/{id}/finalize")
def _(em, a, p): return invoices.finalize_invoice(em, em.get("invoice", a["id"]))
@route("POST", "/v1/invoices/{id}/pay")
def _(em, a, p):
    return invoices.pay_invoice(em, em.get("invoice", a["id"]), payment_method=p.get("payment_method"),
                               off_session=bool(as_bool(p, "off_session", True)), raise_on_failure=True)
@route("POST", "/v1/invoices/{id}/void")
def _(em, a, p): return invoices.void_invoice(em, em.get("invoice", a["id"]))
@route("POST", "/v1/invoices/{id}/mark_uncollectible")
def _(em, a, p): return invoices.mark_uncollectible(em, em.get("invoice", a["id"]))
@route("GET", "/v1/invoices/{id}/lines")
def _(em, a, p):
    inv = em.get("invoice", a["id"])
    return Page(inv["lines"]["data"], False, f"/v1/invoices/{a['id']}/lines")
@route("POST", "/v1/credit_notes/{id}/void")
def _(em, a, p): return credit_notes.void_credit_note(em, em.get("credit_note", a["id"]))


@route("POST", "/v1/payment_methods/{id}/attach")
def _(em, a, p):
    return customers.attach(em, customers.resolve(em, a["id"], "id"),
                            as_str(p, "customer", required=True) or "")
@route("POST", "/v1/payment_methods/{id}/detach")
def _(em, a, p): return customers.detach(em, em.get("payment_method", a["id"]))
@route("POST", "/v1/setup_intents/{id}/confirm")
def _(em, a, p): return intents.confirm_setup_intent(em, em.get("setup_intent", a["id"]), p)
@route("POST", "/v1/setup_intents/{id}/cancel")
def _(em, a, p): return intents.cancel_setup_intent(em, em.get("setup_intent", a["id"]), p)
@route("POST", "/v1/billing_portal/sessions")
def _(em, a, p): return customers.create_portal_session(em, p)


@route("POST", "/v1/payment_intents/{id}/confirm")
def _(em, a, p): return payments.confirm_payment_intent(em, em.get("payment_intent", a["id"]), p)
@route("POST", "/v1/payment_intents/{id}/cancel")
def _(em, a, p): return payments.cancel_payment_intent(em, em.get("payment_intent", a["id"]), p)
@route("POST", "/v1/disputes/{id}/close")
def _(em, a, p): return payments.close_dispute(em, em.get("dispute", a["id"]), "lost")


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
@route("POST", "/v1/test_helpers/test_clocks/{id}/advance")
def _(em, a, p):
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
