"""Synthetic Stripe events shaped like the pinned API version's, for the ingest benchmark and
unit tests that need many events fast (the end-to-end tests use the local Stripe instead).

`history(customers)` is an in-order stream: each customer signs up through Checkout (customer,
subscription, first invoice paid), then renewals, some failing and being retried, quantity
changes, cancellations, refunds and disputes. Each object's events have increasing `created`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator

import stripe

from resources.stripe_client import STRIPE_API_VERSION

SOURCE = "aws.partner/stripe.com/ed_test_bench"
MONTH = 30 * 86400
T0 = 1_790_000_000  # 2026-09


def _id(prefix: str, *parts: object) -> str:
    return f"{prefix}_{hashlib.sha1('|'.join(map(str, parts)).encode()).hexdigest()[:24]}"


def event(event_type: str, obj: dict, created: int, *, api_version: str = STRIPE_API_VERSION,
          previous: dict | None = None) -> dict:
    data: dict = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {"id": _id("evt", event_type, obj["id"], created, json.dumps(obj, sort_keys=True)),
            "object": "event", "api_version": api_version, "created": created, "livemode": False,
            "pending_webhooks": 0, "request": {"id": None, "idempotency_key": None}, "type": event_type,
            "data": data}


def customer(cid: str, created: int, email: str, org: str | None = None, **extra) -> dict:
    meta = {"billing_service": "pypi", "domain": "pypi.org", **({"organization_id": org} if org else {})}
    return {"id": cid, "object": "customer", "created": created, "email": email, "name": f"Org {org or cid}",
            "description": None, "currency": "usd", "livemode": False, "metadata": meta, "deleted": None,
            "invoice_settings": {"default_payment_method": None, "custom_fields": None, "footer": None,
                                 "rendering_options": None}, **extra}


def price(pid: str = "price_seat", product: str = "prod_org") -> dict:
    return {"id": pid, "object": "price", "active": True, "currency": "usd", "unit_amount": 500,
            "product": product, "type": "recurring", "recurring": {"interval": "month", "interval_count": 1},
            "lookup_key": "org-seat", "nickname": None, "livemode": False, "created": T0 - 86400,
            "metadata": {}}


def subscription(sid: str, cid: str, created: int, status: str, quantity: int, period_start: int, *,
                 cancel_at_period_end: bool = False, canceled_at: int | None = None,
                 ended_at: int | None = None, latest_invoice: str | None = None, org: str | None = None) -> dict:
    item = {"id": _id("si", sid), "object": "subscription_item", "created": created, "quantity": quantity,
            "price": price(), "subscription": sid, "current_period_start": period_start,
            "current_period_end": period_start + MONTH, "metadata": {}}
    return {"id": sid, "object": "subscription", "customer": cid, "status": status, "created": created,
            "start_date": created, "cancel_at_period_end": cancel_at_period_end, "cancel_at": None,
            "canceled_at": canceled_at, "ended_at": ended_at, "trial_start": None, "trial_end": None,
            "pause_collection": None, "latest_invoice": latest_invoice, "default_payment_method": None,
            "collection_method": "charge_automatically", "currency": "usd", "livemode": False,
            "metadata": {"billing_service": "pypi", "domain": "pypi.org",
                         **({"organization_id": org} if org else {})},
            "items": {"object": "list", "data": [item], "has_more": False, "total_count": 1,
                      "url": f"/v1/subscription_items?subscription={sid}"}}


def invoice(iid: str, cid: str, sid: str, created: int, status: str, amount: int, attempt_count: int,
            reason: str) -> dict:
    paid = status == "paid"
    return {"id": iid, "object": "invoice", "customer": cid, "status": status, "billing_reason": reason,
            "collection_method": "charge_automatically", "currency": "usd", "amount_due": amount,
            "amount_paid": amount if paid else 0, "amount_remaining": 0 if paid else amount, "total": amount,
            "attempt_count": attempt_count, "next_payment_attempt": None if paid else created + 3 * 86400,
            "period_start": created - MONTH, "period_end": created, "due_date": None,
            "status_transitions": {"paid_at": created if paid else None, "finalized_at": created},
            "number": iid.upper()[-8:], "hosted_invoice_url": None, "livemode": False, "created": created,
            "parent": {"type": "subscription_details", "quote_details": None,
                       "subscription_details": {"subscription": sid, "metadata": {}}}}


def payment_intent(pid: str, cid: str, created: int, amount: int, status: str, code: str | None = None) -> dict:
    error = {"code": code, "decline_code": code, "message": "Your card was declined."} if code else None
    return {"id": pid, "object": "payment_intent", "amount": amount, "currency": "usd", "status": status,
            "customer": cid, "created": created, "livemode": False, "last_payment_error": error,
            "cancellation_reason": None, "metadata": {}}


def charge(chid: str, pid: str, cid: str, created: int, amount: int, status: str, code: str | None = None,
           refunded: int = 0) -> dict:
    return {"id": chid, "object": "charge", "amount": amount, "amount_refunded": refunded, "currency": "usd",
            "status": status, "failure_code": code, "failure_message": "declined" if code else None,
            "payment_intent": pid, "customer": cid, "created": created, "livemode": False,
            "refunded": refunded == amount, "metadata": {}}


def history(customers: int, seed: int = 7, renewals: int = 3) -> list[dict]:
    """Events in Stripe order for `customers` organisations."""
    rng = random.Random(seed)
    out: list[dict] = []
    for n in range(customers):
        out.extend(lifecycle(n, rng, renewals))
    out.sort(key=lambda e: e["created"])
    return out


def lifecycle(n: int, rng: random.Random, renewals: int) -> Iterator[dict]:
    t = T0 + n * 7 + rng.randrange(5)
    org = f"org-{n}"
    cid, sid = _id("cus", n), _id("sub", n)
    seats = rng.randint(1, 20)
    cus = customer(cid, t, f"billing{n}@example.org", org)
    yield event("customer.created", cus, t)
    cs = {"id": _id("cs_test", n), "object": "checkout.session", "mode": "subscription", "status": "complete",
          "customer": cid, "subscription": sid, "client_reference_id": org, "metadata": {},
          "customer_details": {"email": f"billing{n}@example.org"}, "livemode": False, "created": t}
    yield event("customer.subscription.created", subscription(sid, cid, t + 1, "incomplete", seats, t + 1), t + 1)
    period = t + 1
    for r in range(renewals + 1):
        reason = "subscription_create" if r == 0 else "subscription_cycle"
        at = period + (r and MONTH * r)
        iid, pid, chid = _id("in", n, r), _id("pi", n, r), _id("ch", n, r)
        amount = 500 * seats
        failing = r > 0 and rng.random() < 0.15
        yield event("invoice.created", invoice(iid, cid, sid, at + 1, "draft", amount, 0, reason), at + 1)
        yield event("invoice.finalized", invoice(iid, cid, sid, at + 2, "open", amount, 0, reason), at + 2)
        if failing:
            yield event("payment_intent.payment_failed",
                        payment_intent(pid, cid, at + 3, amount, "requires_payment_method", "card_declined"), at + 3)
            yield event("charge.failed", charge(_id("ch", n, r, "f"), pid, cid, at + 3, amount, "failed",
                                                "card_declined"), at + 3)
            yield event("invoice.payment_failed", invoice(iid, cid, sid, at + 4, "open", amount, 1, reason), at + 4)
            yield event("customer.subscription.updated",
                        subscription(sid, cid, t + 1, "past_due", seats, at, latest_invoice=iid), at + 5)
            at += 3 * 86400
        yield event("payment_intent.succeeded", payment_intent(pid, cid, at + 6, amount, "succeeded"), at + 6)
        yield event("charge.succeeded", charge(chid, pid, cid, at + 6, amount, "succeeded"), at + 6)
        yield event("invoice.paid", invoice(iid, cid, sid, at + 7, "paid", amount, 1 + failing, reason), at + 7)
        yield event("customer.subscription.updated",
                    subscription(sid, cid, t + 1, "active", seats, period + MONTH * r, latest_invoice=iid), at + 8)
        if r == 0:
            yield event("checkout.session.completed", cs, at + 9)
        if rng.random() < 0.2:
            seats += rng.choice((-1, 1, 2)) if seats > 1 else 1
            yield event("customer.subscription.updated",
                        subscription(sid, cid, t + 1, "active", seats, period + MONTH * r, latest_invoice=iid),
                        at + 10)
        if rng.random() < 0.03:
            yield event("charge.refunded", charge(chid, pid, cid, at + 6, amount, "succeeded", refunded=amount),
                        at + 11)
        if rng.random() < 0.01:
            dispute = {"id": _id("dp", n, r), "object": "dispute", "amount": amount, "currency": "usd",
                       "status": "needs_response", "reason": "fraudulent", "charge": chid, "payment_intent": pid,
                       "created": at + 12, "livemode": False, "metadata": {}}
            yield event("charge.dispute.created", dispute, at + 12)
    if rng.random() < 0.1:
        end = period + MONTH * (renewals + 1)
        yield event("customer.subscription.deleted",
                    subscription(sid, cid, t + 1, "canceled", seats, end - MONTH, canceled_at=end, ended_at=end),
                    end)


def eventbridge_body(evt: dict, source: str = SOURCE) -> str:
    return json.dumps({"version": "0", "id": _id("eb", evt["id"]), "detail-type": evt["type"], "source": source,
                       "account": "000000000000", "time": "2026-09-01T00:00:00Z", "region": "us-east-1",
                       "resources": [], "detail": evt})


def webhook(evt: dict, secret: str, timestamp: int | None = None) -> tuple[str, dict[str, str]]:
    """(body, SQS string attributes) of a webhook forwarded with its signature."""
    body = json.dumps(evt)
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp)
    return body, {"Stripe-Signature": header}
