"""Subscriptions, renewals and dunning (invoices.py has the invoices).

Status transitions (Stripe's eight):
  create with a trial                         -> trialing
  create, first invoice paid                  -> incomplete -> active
  create, first payment fails / default_incomplete -> incomplete; its invoice paid -> active;
                                                 unpaid 23 hours after creation -> incomplete_expired
  trial ends: invoice paid -> active; fails -> past_due; no payment method and
      trial_settings.end_behavior.missing_payment_method = pause -> paused (POST .../resume -> active),
      = cancel -> canceled
  renewal fails                               -> past_due; retried 3, 8 and 15 days after the first
      failure (3, 5, 7 days apart: Stripe's default schedule); a retry that succeeds -> active;
      after the last retry fails the configured final action: cancel (default) -> canceled,
      unpaid -> unpaid (later renewals leave draft invoices), past_due -> stays past_due
  DELETE, cancel_at_period_end / cancel_at reached -> canceled
No proration: quantity and item changes apply from the next renewal invoice.

Billing mode (billing_mode[type]): under `classic` (the default) every item shares one period, so
all prices must have the same currency and interval. Under `flexible` each item carries its own
period: prices of different intervals may sit on one subscription (still one currency), each item
renews at its own period end, and the subscription falls due at the earliest of them.
"""

from __future__ import annotations

import datetime as dt
import heapq
from typing import Any

from devstack.local_stripe import shapes
from devstack.local_stripe.app import Emulator
from devstack.local_stripe.clock import add_interval
from devstack.local_stripe.events import previous_attributes
from devstack.local_stripe.customers import (attach, default_payment_method, deleted_stub, ensure_customer_exists,
                                             resolve)
from devstack.local_stripe.errors import invalid
from devstack.local_stripe.shapes import compact
from devstack.local_stripe.invoices import (cycle_invoice, finalize_invoice, mark_uncollectible, pay_invoice,
                                            set_status, void_invoice)
from devstack.local_stripe.store import new_id
from devstack.local_stripe.wire import as_bool, as_int, as_list, as_metadata, as_str

INCOMPLETE_EXPIRES_AFTER = 23 * 3600
TRIAL_WILL_END_BEFORE = 3 * 86400
ENDED = ("canceled", "incomplete_expired")


# --- items ------------------------------------------------------------------------------------

def recurring_price(em: Emulator, ref: Any, param: str) -> dict[str, Any]:
    price = em.get("price", ref, param)
    if price.get("type") != "recurring":
        raise invalid(f"The price specified ({price['id']}) is not recurring; subscriptions need recurring prices.", param)
    if not price.get("active"):
        raise invalid(f"The price specified ({price['id']}) is inactive.", param)
    return price


def _item(em: Emulator, sub_id: str, price: dict[str, Any], quantity: int, metadata: dict[str, str],
          created: int, period: tuple[int, int]) -> dict[str, Any]:
    item_id = new_id("subscription_item")
    em.item_owner[item_id] = sub_id
    return compact("subscription_item", {"id": item_id, "object": "subscription_item", "created": created,
            "price": price, "quantity": quantity, "metadata": metadata, "subscription": sub_id,
            "current_period_start": period[0], "current_period_end": period[1]})


def _items_list(sub_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": items, "has_more": False, "total_count": len(items),
            "url": f"/v1/subscription_items?subscription={sub_id}"}


def _flexible(sub: dict[str, Any]) -> bool:
    return ((sub.get("billing_mode") or {}).get("type")) == "flexible"


def _check_mix(prices: list[dict[str, Any]], flexible: bool, param: str) -> None:
    """One currency always; one interval unless each item carries its own period (flexible)."""
    first = prices[0]
    for price in prices[1:]:
        if price["currency"] != first["currency"] or (
                not flexible and price["recurring"]["interval"] != first["recurring"]["interval"]):
            raise invalid("All prices on a subscription must have the same currency and interval"
                          + ("." if not flexible else " unit (flexible billing mode allows mixed intervals only)."),
                          param)


def _interval(price: dict[str, Any]) -> tuple[str, int]:
    return price["recurring"]["interval"], price["recurring"].get("interval_count") or 1


def next_period_end(sub: dict[str, Any]) -> int:
    """When the subscription next falls due: the earliest of its items' period ends."""
    return min(it["current_period_end"] for it in sub["items"]["data"])


def _with_period(items: list[dict[str, Any]], start: int, end: int) -> list[dict[str, Any]]:
    return [compact("subscription_item", {**it, "current_period_start": start, "current_period_end": end})
            for it in items]


# --- subscriptions ----------------------------------------------------------------------------

def create_subscription(em: Emulator, p: dict[str, Any], *, source: str = "api") -> dict[str, Any]:
    customer_id = as_str(p, "customer", required=True)
    assert customer_id
    ensure_customer_exists(em, customer_id)
    customer = em.get("customer", customer_id, "customer")
    now = em.now_for(customer)
    requested = as_list(p, "items")
    if not requested:
        raise invalid("Missing required param: items.", "items", code="parameter_missing")
    prices = []
    for i, it in enumerate(requested):
        if not isinstance(it, dict) or not it.get("price"):
            raise invalid(f"Missing required param: items[{i}][price].", f"items[{i}][price]", code="parameter_missing")
        prices.append((recurring_price(em, it["price"], f"items[{i}][price]"),
                       as_int(it, "quantity", 1, minimum=0), as_metadata(it)))
    first = prices[0][0]
    mode = p.get("billing_mode")
    mode = as_str(mode, "type", "classic", choices=("classic", "flexible")) if isinstance(mode, dict) else "classic"
    _check_mix([price for price, _, _ in prices], mode == "flexible", "items")
    pm_id = None
    if p.get("default_payment_method"):
        pm = resolve(em, p["default_payment_method"], "default_payment_method")
        pm_id = attach(em, pm, customer_id)["id"]
    trial_end = None
    if p.get("trial_end"):
        trial_end = now if p["trial_end"] == "now" else as_int(p, "trial_end", minimum=now)
    elif p.get("trial_period_days"):
        trial_end = now + 86400 * (as_int(p, "trial_period_days", minimum=1) or 0)
    behaviour = as_str(p, "payment_behavior", "allow_incomplete",
                       choices=("allow_incomplete", "default_incomplete", "error_if_incomplete", "pending_if_incomplete"))
    missing_pm = "create_invoice"
    ts = p.get("trial_settings")
    if isinstance(ts, dict) and isinstance(ts.get("end_behavior"), dict):
        missing_pm = as_str(ts["end_behavior"], "missing_payment_method", "create_invoice",
                            choices=("cancel", "create_invoice", "pause")) or "create_invoice"
    interval, count = first["recurring"]["interval"], first["recurring"]["interval_count"]
    period = (now, trial_end if trial_end and trial_end > now else add_interval(now, interval, count))
    sid = new_id("subscription")
    trialing = bool(trial_end and trial_end > now)
    items = [_item(em, sid, price, q, md, now, period if trialing or mode == "classic"
                   else (now, add_interval(now, *_interval(price)))) for price, q, md in prices]
    sub = em.create("subscription", {
        "customer": customer_id, "status": "trialing" if trialing else "incomplete",
        "items": _items_list(sid, items), "currency": first["currency"], "metadata": as_metadata(p),
        "billing_cycle_anchor": period[1] if trialing else now, "start_date": now,
        "cancel_at_period_end": as_bool(p, "cancel_at_period_end", False), "cancel_at": as_int(p, "cancel_at"),
        "collection_method": as_str(p, "collection_method", "charge_automatically",
                                    choices=("charge_automatically", "send_invoice")),
        "days_until_due": as_int(p, "days_until_due"), "default_payment_method": pm_id,
        "description": as_str(p, "description"), "trial_start": now if trialing else None,
        "trial_end": trial_end if trialing else None, "latest_invoice": None,
        "trial_settings": {
            "end_behavior": {"missing_payment_method": missing_pm}},
        "billing_mode": {"type": mode, "updated_at": now if mode == "flexible" else None},
        "test_clock": customer.get("test_clock"),
        "payment_settings": {
            "save_default_payment_method": "off", "payment_method_types": None},
    }, oid=sid, created=now, event=False)
    em.cycles[sid] = {"anchor_day": dt.datetime.fromtimestamp(period[1] if trialing else now, dt.timezone.utc).day,
                      "interval": interval, "count": count, "failed_at": None, "retries": 0,
                      "trial_will_end_sent": False, "source": source}
    if behaviour == "error_if_incomplete" and not trialing and not default_payment_method(em, customer_id, sub):
        em.store["subscription"].remove(sid)
        raise invalid("This customer has no attached payment source or default payment method.", "customer")
    # Created with the status its first invoice leaves it in (active when paid at once), as
    # Stripe reports it: the changes on the way are not separate updates.
    em.quiet.add(sid)
    try:
        invoice = cycle_invoice(em, sub, "subscription_create", period, now, trial=trialing)
        if invoice["status"] == "open" and behaviour != "default_incomplete":
            pay_invoice(em, invoice, off_session=False)
    finally:
        em.quiet.discard(sid)
    sub = em.get("subscription", sid)
    em.emit("customer.subscription.created", sub)
    return sub


def update_subscription(em: Emulator, sub: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    if sub["status"] in ENDED:
        raise invalid("A canceled subscription can only update its cancellation_details and metadata.", "id")
    changes: dict[str, Any] = {"metadata": as_metadata(p, sub.get("metadata"))}
    if "cancel_at_period_end" in p:
        cape = as_bool(p, "cancel_at_period_end")
        changes["cancel_at_period_end"] = cape
        changes["canceled_at"] = em.now_for(sub) if cape else None
        changes["cancellation_details"] = {
            "reason": "cancellation_requested"} if cape else None
    if "cancel_at" in p:
        changes["cancel_at"] = as_int(p, "cancel_at") if p["cancel_at"] else None
    for name in ("description",):
        if name in p:
            changes[name] = as_str(p, name) or None
    if "default_payment_method" in p:
        ref = p["default_payment_method"]
        changes["default_payment_method"] = attach(em, resolve(em, ref, "default_payment_method"),
                                                   sub["customer"])["id"] if ref else None
    if "pause_collection" in p:
        pc = p["pause_collection"]
        if pc in ("", None):
            changes["pause_collection"] = None
        else:
            behaviour = as_str(pc, "behavior", required=True, choices=("keep_as_draft", "mark_uncollectible", "void"))
            changes["pause_collection"] = {"behavior": behaviour, "resumes_at": as_int(pc, "resumes_at")}
    if "items" in p:
        changes["items"] = _items_list(sub["id"], _updated_items(em, sub, as_list(p, "items")))
    if "trial_end" in p and p["trial_end"] == "now" and sub["status"] == "trialing":
        changes["trial_end"] = em.now_for(sub)
    new = em.update(sub, changes)
    if changes.get("trial_end") is not None and sub["status"] == "trialing":
        run_subscription(em, new["id"], em.now_for(new))
        new = em.get("subscription", new["id"])
    return new


def _updated_items(em: Emulator, sub: dict[str, Any], requested: list[Any]) -> list[dict[str, Any]]:
    items = {it["id"]: it for it in sub["items"]["data"]}
    order = list(items)
    some = next(iter(items.values()))
    period = (some["current_period_start"], some["current_period_end"])
    for i, req in enumerate(requested):
        if not isinstance(req, dict):
            raise invalid(f"Invalid items[{i}]", f"items[{i}]")
        if req.get("id"):
            if req["id"] not in items:
                raise invalid(f"No such subscription item: '{req['id']}' on subscription {sub['id']}",
                              f"items[{i}][id]", code="resource_missing")
            if as_bool(req, "deleted", False):
                del items[req["id"]]
                order.remove(req["id"])
                continue
            it = dict(items[req["id"]])
            if req.get("price"):
                it["price"] = recurring_price(em, req["price"], f"items[{i}][price]")
            if "quantity" in req:
                it["quantity"] = as_int(req, "quantity", minimum=0)
            if "metadata" in req:
                it["metadata"] = as_metadata(req, it.get("metadata"))
            items[it["id"]] = compact("subscription_item", it)
        else:
            if not req.get("price"):
                raise invalid(f"Missing required param: items[{i}][price].", f"items[{i}][price]",
                              code="parameter_missing")
            price = recurring_price(em, req["price"], f"items[{i}][price]")
            it = _item(em, sub["id"], price, as_int(req, "quantity", 1, minimum=0) or 0, as_metadata(req),
                       em.now_for(sub), _new_item_period(em, sub, price, period))
            items[it["id"]] = compact("subscription_item", it)
            order.append(it["id"])
    if not order:
        raise invalid("A subscription must keep at least one item.", "items")
    _check_mix([items[k]["price"] for k in order], _flexible(sub), "items")
    return [items[k] for k in order]


def _new_item_period(em: Emulator, sub: dict[str, Any], price: dict[str, Any],
                     shared: tuple[int, int]) -> tuple[int, int]:
    """An added item shares the subscription's period; under flexible billing mode, an item of an
    interval no other item has starts its own period now."""
    if not _flexible(sub):
        return shared
    for it in sub["items"]["data"]:
        if _interval(it["price"]) == _interval(price):
            return it["current_period_start"], it["current_period_end"]
    now = em.now_for(sub)
    return now, add_interval(now, *_interval(price))


def add_item(em: Emulator, p: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/subscription_items: one more item on a subscription (customer.subscription.updated)."""
    sub = em.get("subscription", as_str(p, "subscription", required=True), "subscription")
    if not p.get("price"):
        raise invalid("Missing required param: price.", "price", code="parameter_missing")
    before = {it["id"] for it in sub["items"]["data"]}
    fields = {k: p[k] for k in ("price", "quantity", "metadata") if k in p}
    new = update_subscription(em, sub, {"items": [fields]})
    return next(it for it in new["items"]["data"] if it["id"] not in before)


def cancel_subscription(em: Emulator, sub: dict[str, Any], p: dict[str, Any], *,
                        reason: str = "cancellation_requested", at: int | None = None) -> dict[str, Any]:
    if sub["status"] in ENDED:
        raise invalid(f"This subscription has already been canceled: {sub['id']}", "id")
    at = em.now_for(sub) if at is None else at
    details = p.get("cancellation_details") if isinstance(p.get("cancellation_details"), dict) else {}
    return em.update(sub, {
        "status": "canceled", "canceled_at": sub.get("canceled_at") or at, "ended_at": at,
        "cancellation_details": {
            "reason": reason, "comment": details.get("comment"), "feedback": details.get("feedback")},
    }, event="deleted")


def delete_customer(em: Emulator, customer: dict[str, Any]) -> dict[str, Any]:
    for sub in list(em.store["subscription"].oldest_first(0)):
        if sub["customer"] == customer["id"] and sub["status"] not in ENDED:
            cancel_subscription(em, sub, {})
    em.store["customer"].remove(customer["id"])
    em.deleted[customer["id"]] = "customer"
    em.emit("customer.deleted", customer)
    return deleted_stub(customer["id"], "customer")


def pause_subscription(em: Emulator, sub: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/subscriptions/<id>/pause: no invoices until resumed."""
    if sub["status"] not in ("active", "past_due", "trialing", "unpaid"):
        raise invalid(f"Subscription {sub['id']} cannot be paused from status {sub['status']}.", "id")
    as_str(p, "type", "subscription", choices=("subscription",))
    sub = em.update(sub, {"status": "paused", "pause_collection": None})
    em.emit("customer.subscription.paused", sub)
    return sub


def resume_subscription(em: Emulator, sub: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    """Back to active. billing_cycle_anchor now (the default) starts a new period with an
    invoice at once; unchanged keeps the period (its end renews as usual)."""
    if sub["status"] != "paused":
        raise invalid(f"Subscription {sub['id']} is not paused (status {sub['status']}); only paused "
                      "subscriptions can be resumed.", "id")
    anchor = p.get("billing_cycle_anchor") or "now"
    if isinstance(anchor, dict):
        anchor = anchor.get("type") or "now"
    if anchor not in ("now", "unchanged"):
        raise invalid("billing_cycle_anchor must be now or unchanged", "billing_cycle_anchor")
    now = em.now_for(sub)
    cyc = em.cycles[sub["id"]]
    if anchor == "unchanged" and next_period_end(sub) > now:
        sub = em.update(sub, {"status": "active"})
        em.emit("customer.subscription.resumed", sub)
        return sub
    period = (now, add_interval(now, cyc["interval"], cyc["count"]))
    cyc["anchor_day"] = dt.datetime.fromtimestamp(now, dt.timezone.utc).day
    sub = em.update(sub, {"status": "active", "pause_collection": None, "billing_cycle_anchor": now,
                          "items": _items_list(sub["id"], _with_period(sub["items"]["data"], *period))})
    em.emit("customer.subscription.resumed", sub)
    invoice = cycle_invoice(em, sub, "subscription_cycle", period, now)
    if invoice["status"] == "open":
        pay_invoice(em, invoice, off_session=True)
    return em.get("subscription", sub["id"])


# --- the passage of time ----------------------------------------------------------------------

def run_due(em: Emulator, test_clock: str | None = None) -> int:
    """Every subscription on that clock (the emulator clock when None) catches up to now, all
    of them in the order things fall due, so events come out in time order."""
    now = em.now(test_clock)
    heap: list[tuple[int, int, str]] = []
    for seq, sub in enumerate(em.store["subscription"].oldest_first(0)):
        if sub.get("test_clock") == test_clock and sub["status"] not in ENDED:
            due = _next_due(em, sub)
            if due is not None and due[0] <= now:
                heap.append((due[0], seq, sub["id"]))
    heapq.heapify(heap)
    steps = 0
    while heap:
        at, seq, sub_id = heapq.heappop(heap)
        if not _step(em, sub_id, at):
            continue
        steps += 1
        due = _next_due(em, em.get("subscription", sub_id))
        if due is not None and due[0] <= now:
            heapq.heappush(heap, (max(due[0], at), seq, sub_id))
    return steps


def _next_due(em: Emulator, sub: dict[str, Any]) -> tuple[int, str] | None:
    cyc = em.cycles.get(sub["id"])
    status = sub["status"]
    if cyc is None or status in ENDED:
        return None
    period_end = next_period_end(sub)
    candidates: list[tuple[int, str]] = []
    if status == "incomplete":
        candidates.append((sub["created"] + INCOMPLETE_EXPIRES_AFTER, "expire"))
    elif status == "paused":
        return None
    else:
        if status == "trialing" and not cyc["trial_will_end_sent"]:
            candidates.append((sub["trial_end"] - TRIAL_WILL_END_BEFORE, "trial_will_end"))
        cancel_at = sub.get("cancel_at")
        if cancel_at and cancel_at <= period_end:
            candidates.append((cancel_at, "cancel"))
        candidates.append((period_end, "cancel" if sub.get("cancel_at_period_end") else "renew"))
        inv = em.store["invoice"].get(sub.get("latest_invoice") or "")
        if inv and inv["status"] == "open" and inv.get("next_payment_attempt"):
            candidates.append((inv["next_payment_attempt"], "retry"))
    return min(candidates) if candidates else None


def run_subscription(em: Emulator, sub_id: str, now: int) -> int:
    steps = 0
    while steps < 10_000:
        due = _next_due(em, em.get("subscription", sub_id))
        if due is None or due[0] > now:
            break
        if not _step(em, sub_id, due[0]):
            break
        steps += 1
    return steps


def _step(em: Emulator, sub_id: str, at: int) -> int:
    """Does what falls due for the subscription at `at`, dated `at`."""
    sub = em.get("subscription", sub_id)
    due = _next_due(em, sub)
    if sub["status"] in ENDED or due is None or due[0] > at:
        return 0
    action = due[1]
    cyc = em.cycles[sub_id]
    with em.happening_at(at):
        if action == "expire":
            inv = em.store["invoice"].get(sub.get("latest_invoice") or "")
            if inv and inv["status"] == "open":
                void_invoice(em, inv)
            em.update(em.get("subscription", sub_id), {"status": "incomplete_expired", "ended_at": at})
        elif action == "trial_will_end":
            cyc["trial_will_end_sent"] = True
            em.emit("customer.subscription.trial_will_end", sub)
        elif action == "cancel":
            cancel_subscription(em, sub, {}, at=at)
        elif action == "retry":
            inv = em.get("invoice", sub["latest_invoice"])
            cyc["retries"] += 1
            inv = pay_invoice(em, inv, off_session=True)
            if inv["status"] == "open" and inv.get("next_payment_attempt") is None:
                _final_action(em, sub_id, at)
        else:
            _renew(em, sub, at)
    return 1


def _final_action(em: Emulator, sub_id: str, at: int) -> None:
    action = em.config.dunning_final_action
    sub = em.get("subscription", sub_id)
    if action == "cancel":
        cancel_subscription(em, sub, {}, reason="payment_failed", at=at)
    elif action == "unpaid":
        set_status(em, sub_id, "unpaid")


def _renewed_items(sub: dict[str, Any], cyc: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every item after the renewal, the items renewed): all of them on one period (classic), or
    under flexible billing mode those whose own period ends first, each by its own interval."""
    start = next_period_end(sub)
    if not _flexible(sub):
        end = add_interval(start, cyc["interval"], cyc["count"], cyc["anchor_day"])
        items = _with_period(sub["items"]["data"], start, end)
        return items, items
    items, renewed = [], []
    for it in sub["items"]["data"]:
        if it["current_period_end"] == start:
            it = _with_period([it], start, add_interval(start, *_interval(it["price"]), cyc["anchor_day"]))[0]
            renewed.append(it)
        items.append(it)
    return items, renewed


def _renew(em: Emulator, sub: dict[str, Any], at: int) -> None:
    cyc = em.cycles[sub["id"]]
    items, renewed = _renewed_items(sub, cyc)
    start, end = renewed[0]["current_period_start"], renewed[0]["current_period_end"]
    was_trialing = sub["status"] == "trialing"
    changes: dict[str, Any] = {"items": _items_list(sub["id"], items)}
    if was_trialing:
        pm = default_payment_method(em, sub["customer"], sub)
        behaviour = sub["trial_settings"]["end_behavior"]["missing_payment_method"]
        if not pm and behaviour == "pause":
            em.update(sub, {"status": "paused", "pause_collection": None}, event="updated")
            em.emit("customer.subscription.paused", em.get("subscription", sub["id"]))
            return
        if not pm and behaviour == "cancel":
            cancel_subscription(em, sub, {}, reason="cancellation_requested", at=at)
            return
        changes["status"] = "active"
    before = sub
    sub = em.update(sub, changes, event=None)
    pause = sub.get("pause_collection")
    unpaid = sub["status"] == "unpaid"
    invoice = cycle_invoice(em, sub, "subscription_cycle", (start, end), at, finalize=not (pause or unpaid),
                            items=[it["id"] for it in renewed])
    # As on Stripe, one customer.subscription.updated carries the new period and the new latest_invoice.
    renewed = em.get("subscription", sub["id"])
    em.emit("customer.subscription.updated", renewed,
            previous_attributes(before, renewed, shapes.skeleton("subscription")))
    if unpaid or (pause and pause["behavior"] == "keep_as_draft"):
        return
    if pause:
        invoice = finalize_invoice(em, invoice, at) if invoice["status"] == "draft" else invoice
        if invoice["status"] == "open":
            (void_invoice if pause["behavior"] == "void" else mark_uncollectible)(em, invoice)
        return
    if invoice["status"] == "open":
        cyc.update(failed_at=None, retries=0)
        pay_invoice(em, invoice, off_session=True)
