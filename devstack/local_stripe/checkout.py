"""Checkout Sessions in subscription mode: created by the API, completed through
/_control/checkout_sessions/<id>/complete as a payer would complete the hosted page."""

from __future__ import annotations

from typing import Any

from devstack.local_stripe.app import Emulator
from devstack.local_stripe.billing import create_subscription, recurring_price
from devstack.local_stripe.customers import attach, create_customer, resolve
from devstack.local_stripe.errors import card_error, invalid
from devstack.local_stripe.payments import DECLINES
from devstack.local_stripe.store import new_id
from devstack.local_stripe.wire import as_int, as_list, as_metadata, as_str

EXPIRES_AFTER = 24 * 3600


def create_session(em: Emulator, p: dict[str, Any]) -> dict[str, Any]:
    mode = as_str(p, "mode", required=True, choices=("subscription", "payment", "setup"))
    if mode != "subscription":
        raise invalid("The local Stripe supports Checkout Sessions in subscription mode only.", "mode")
    customer = as_str(p, "customer")
    if customer:
        em.get("customer", customer, "customer")
    items = as_list(p, "line_items")
    if not items:
        raise invalid("Missing required param: line_items.", "line_items", code="parameter_missing")
    lines, total, currency = [], 0, None
    for i, it in enumerate(items):
        if not isinstance(it, dict) or not it.get("price"):
            raise invalid(f"Missing required param: line_items[{i}][price].", f"line_items[{i}][price]",
                          code="parameter_missing")
        price = recurring_price(em, it["price"], f"line_items[{i}][price]")
        quantity = as_int(it, "quantity", 1, minimum=1) or 1
        currency = price["currency"]
        total += price["unit_amount"] * quantity
        lines.append({"id": new_id("line_item").replace("il_", "li_"), "object": "item", "price": price,
                      "quantity": quantity, "currency": price["currency"], "amount_subtotal": price["unit_amount"] * quantity,
                      "amount_total": price["unit_amount"] * quantity, "amount_discount": 0, "amount_tax": 0,
                      "description": price.get("nickname")})
    sub_data = p.get("subscription_data") if isinstance(p.get("subscription_data"), dict) else {}
    now = em.now()
    oid = new_id("checkout.session")
    session = em.create("checkout.session", {
        "mode": "subscription", "status": "open", "payment_status": "unpaid", "customer": customer,
        "customer_email": as_str(p, "customer_email"), "client_reference_id": as_str(p, "client_reference_id"),
        "success_url": as_str(p, "success_url"), "cancel_url": as_str(p, "cancel_url"),
        "metadata": as_metadata(p), "currency": currency, "amount_subtotal": total, "amount_total": total,
        "expires_at": now + EXPIRES_AFTER, "url": f"{em.config.public_base}/_checkout/{oid}",
        "line_items": {"object": "list", "data": lines, "has_more": False,
                       "url": f"/v1/checkout/sessions/{oid}/line_items"},
        "payment_method_types": ["card"], "payment_method_collection": "always", "locale": None,
        "subscription": None, "invoice": None, "payment_intent": None, "setup_intent": None,
        "customer_creation": None if customer else "always", "ui_mode": "hosted", "livemode": False,
        "allow_promotion_codes": as_str(p, "allow_promotion_codes") == "true" or None,
        "billing_address_collection": as_str(p, "billing_address_collection"),
        "total_details": {
            "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "automatic_tax": {"enabled": False},
        "custom_fields": [], "custom_text": {},
        "shipping_options": [], "discounts": [], "payment_method_options": None,
    }, oid=oid, created=now)
    em.checkout_data[oid] = {"metadata": as_metadata(sub_data) if sub_data else {},
                             "trial_period_days": sub_data.get("trial_period_days")}
    return session


def complete_session(em: Emulator, session: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    """What the hosted page does when a payer enters a card and subscribes. A card that
    declines is refused on the page (402, nothing created, the session stays open); one that
    asks for 3D Secure is authenticated by the payer, so only later off-session charges fail."""
    if session["status"] != "open":
        raise invalid(f"Checkout Session {session['id']} is {session['status']}; only open sessions complete.")
    pm = resolve(em, p.get("payment_method") or "pm_card_visa", "payment_method")
    behaviour = em.pm_behaviour.get(pm["id"], "succeed")
    if behaviour.startswith("decline"):
        code, decline, message = DECLINES[behaviour]
        raise card_error(message, code, decline_code=decline)
    customer_id = session.get("customer")
    if not customer_id:
        email = p.get("email") or session.get("customer_email") or "payer@example.com"
        customer_id = create_customer(em, {"email": email, "name": p.get("name")})["id"]
    pm = attach(em, pm, customer_id)
    customer = em.get("customer", customer_id)
    em.update(customer, {"invoice_settings": {**customer["invoice_settings"], "default_payment_method": pm["id"]}})
    data = em.checkout_data.get(session["id"]) or {}
    params: dict[str, Any] = {
        "customer": customer_id, "payment_behavior": "allow_incomplete", "default_payment_method": pm["id"],
        "items": [{"price": li["price"]["id"], "quantity": str(li["quantity"])} for li in session["line_items"]["data"]],
        "metadata": data.get("metadata") or {},
    }
    if data.get("trial_period_days"):
        params["trial_period_days"] = data["trial_period_days"]
    em.pm_behaviour[pm["id"]] = "succeed"  # the payer is on the page: 3D Secure passes
    try:
        sub = create_subscription(em, params, source="checkout")
    finally:
        em.pm_behaviour[pm["id"]] = behaviour
    invoice = em.get("invoice", sub["latest_invoice"])
    customer = em.get("customer", customer_id)
    session = em.get("checkout.session", session["id"])
    return em.update(session, {
        "status": "complete", "payment_status": "paid" if invoice["status"] == "paid" and invoice["total"] else
        "no_payment_required", "customer": customer_id, "subscription": sub["id"], "invoice": invoice["id"],
        "customer_details": {"email": customer.get("email"), "name": customer.get("name"), "tax_exempt": "none",
                             "tax_ids": [], "address": None, "phone": None},
    }, event="completed")


def expire_session(em: Emulator, session: dict[str, Any]) -> dict[str, Any]:
    if session["status"] != "open":
        raise invalid(f"Only open Checkout Sessions can be expired; {session['id']} is {session['status']}.")
    return em.update(session, {"status": "expired", "url": None}, event="expired")
