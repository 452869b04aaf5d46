"""/_control/: what a test or a developer does to the emulator that Stripe's API cannot.

POST /_control/advance {seconds}                 move the emulator clock; renewals and dunning run
GET  /_control/clock                             {"now": ...}
POST /_control/checkout_sessions/<id>/complete {payment_method?, email?, name?}
POST /_control/payment_methods/<id>/fail | /succeed | /behaviour {behaviour}
POST /_control/disputes {charge, reason?, amount?}; POST /_control/disputes/<id>/close {status: won|lost}
GET|POST /_control/faults {rate_429, rate_5xx, status_5xx, latency_seconds, duplicate_rate,
                           reorder_window, delay_rate, delay_seconds, seed}   (POST replaces the whole set)
GET|POST /_control/delivery {mode: eventbridge|webhook|off, queue_url, sqs_endpoint, source_id,
                             webhook_secret, region, account}
POST /_control/flush {timeout?, include_delayed?} wait until queued deliveries are sent
GET|POST /_control/settings {dunning_final_action: cancel|unpaid|past_due, retry_days: [3, 8, 15]}
POST /_control/reset                             forget every object and event
GET  /_control/state/<type>                      every stored object of a type, rendered
POST /_control/objects/<id> {field: value, ...}  set top-level fields of a stored object silently: no
                                                 event, no delivery (a change whose event never came)
POST /_control/seed {customers, subscriptions_per_customer?, price?, events?}  bulk data for benchmarks
GET  /_control/health
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from devstack.local_stripe import billing, catalog, checkout, customers, payments
from devstack.local_stripe.app import DUNNING_FINAL_ACTIONS, Emulator
from devstack.local_stripe.errors import StripeError, invalid
from devstack.local_stripe.faults import Faults
from devstack.local_stripe.store import type_of_id


def dispatch(em: Emulator, method: str, path: str, query: str, raw: bytes) -> tuple[int, Any]:
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise invalid(f"control endpoints take a JSON object body: {exc}") from None
    if not isinstance(body, dict):
        raise invalid("control endpoints take a JSON object body")
    body.update(dict(parse_qsl(query)))
    route = path.removeprefix("/_control/").strip("/")
    if method == "POST" and route == "flush":  # outside the lock: the sender needs it to render nothing
        ok = em.deliverer.flush(float(body.get("timeout", 10)), bool(body.get("include_delayed", False)))
        return (200 if ok else 504), {"flushed": ok, **em.deliverer.stats()}
    with em.lock:
        em.request = {"id": None, "idempotency_key": None}
        return 200, _route(em, method, route, body)


def _route(em: Emulator, method: str, route: str, body: dict[str, Any]) -> Any:
    if route == "health":
        return {"ok": True, "now": em.now(), "api_version": em.config.api_version}
    if route == "clock":
        return {"now": em.now(), "offset": em.clock.offset}
    if method == "POST" and route == "advance":
        seconds = body.get("seconds")
        if not isinstance(seconds, (int, float)) or seconds < 0:
            raise invalid("advance takes {\"seconds\": <non-negative number>}", "seconds")
        now = em.clock.advance(int(seconds))
        steps = billing.run_due(em, None)
        em.events.prune()
        return {"now": now, "steps": steps}
    if method == "POST" and route == "reset":
        em.reset()
        return {"reset": True}
    if route == "faults":
        if method == "POST":
            em.faults = Faults.from_params(body)
            em.deliverer.faults = em.faults
        return em.faults.as_dict()
    if route == "delivery":
        if method == "POST":
            em.config.delivery.update(body)
        return {**em.config.delivery.public(), **em.deliverer.stats()}
    if route == "settings":
        if method == "POST":
            if "dunning_final_action" in body:
                if body["dunning_final_action"] not in DUNNING_FINAL_ACTIONS:
                    raise invalid(f"dunning_final_action must be one of {', '.join(DUNNING_FINAL_ACTIONS)}",
                                  "dunning_final_action")
                em.config.dunning_final_action = body["dunning_final_action"]
            if "retry_days" in body:
                days = body["retry_days"]
                if not isinstance(days, list) or not all(isinstance(d, int) and d > 0 for d in days) \
                        or days != sorted(days):
                    raise invalid("retry_days must be increasing positive integers (days after the first failure)",
                                  "retry_days")
                em.config.retry_days = tuple(days)
        return {"dunning_final_action": em.config.dunning_final_action, "retry_days": list(em.config.retry_days)}
    m = re.fullmatch(r"state/([\w.]+)", route)
    if m and method == "GET":
        name = m.group(1)
        if name not in em.store.tables:
            raise invalid(f"unknown type {name!r}; one of {', '.join(sorted(em.store.tables))}", "type")
        return {"object": name, "data": [em.render(o) for o in em.store[name].oldest_first(0)]}
    m = re.fullmatch(r"objects/([^/]+)", route)
    if m and method == "POST":
        name = type_of_id(m.group(1))
        if name is None:
            raise invalid(f"no object type has the id prefix of {m.group(1)!r}", "id")
        obj = em.get(name, m.group(1))
        obj.update(body)
        em.store[name].put(obj)
        return em.render(obj)
    m = re.fullmatch(r"checkout_sessions/([^/]+)/complete", route)
    if m and method == "POST":
        return em.render(checkout.complete_session(em, em.get("checkout.session", m.group(1)), body))
    m = re.fullmatch(r"payment_methods/([^/]+)/(fail|succeed|behaviour)", route)
    if m and method == "POST":
        behaviour = {"fail": "decline", "succeed": "succeed"}.get(m.group(2)) or str(body.get("behaviour"))
        return em.render(customers.set_behaviour(em, m.group(1), behaviour))
    if route == "disputes" and method == "POST":
        return em.render(payments.create_dispute(em, body))
    m = re.fullmatch(r"disputes/([^/]+)/close", route)
    if m and method == "POST":
        return em.render(payments.close_dispute(em, em.get("dispute", m.group(1)), str(body.get("status", "lost"))))
    if route == "seed" and method == "POST":
        return seed(em, body)
    raise StripeError(404, "invalid_request_error", f"unknown control endpoint {method} /_control/{route}")


def seed(em: Emulator, body: dict[str, Any]) -> dict[str, Any]:
    """Bulk customers with active subscriptions and paid invoices, without events unless asked
    (events: true), for benchmarks: a sweep over 100,000 subscriptions starts here."""
    n = int(body.get("customers", 0))
    per = int(body.get("subscriptions_per_customer", 1))
    with_events = bool(body.get("events", False))
    price_id = body.get("price")
    if price_id:
        price = em.get("price", price_id, "price")
    else:
        product = catalog.create_product(em, {"name": "Seeded plan"})
        price = catalog.create_price(em, {"product": product["id"], "currency": "usd", "unit_amount": "500",
                                          "recurring": {"interval": "month"}})
    em.recording = with_events
    try:
        for i in range(n):
            customer = customers.create_customer(em, {"email": f"seed{i}@example.com", "name": f"Seed {i}",
                                                      "metadata": {"seed": "true"}, "payment_method": "pm_card_visa",
                                                      "invoice_settings": {"default_payment_method": "pm_card_visa"}})
            for _ in range(per):
                billing.create_subscription(em, {"customer": customer["id"], "items": [{"price": price["id"]}]})
    finally:
        em.recording = True
    return {"customers": n, "subscriptions": n * per, "price": price["id"],
            "totals": {k: len(t) for k, t in em.store.tables.items() if len(t)}}

