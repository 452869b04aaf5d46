"""Customers, payment methods (with Stripe's test tokens), billing portal sessions. Imports no other
object module: payments, intents and billing build on it."""

from __future__ import annotations

import secrets
from typing import Any

from devstack.local_stripe.app import Emulator
from devstack.local_stripe.errors import StripeError, invalid, missing
from devstack.local_stripe.wire import as_metadata, as_str

# Stripe's test payment methods: token -> (brand, last4, behaviour).
# succeed: every charge succeeds; decline: every charge fails (card_declined);
# authenticate: needs 3D Secure on session, fails off session (authentication_required).
TEST_CARDS = {
    "pm_card_visa": ("visa", "4242", "succeed"),
    "pm_card_mastercard": ("mastercard", "4444", "succeed"),
    "pm_card_amex": ("amex", "8431", "succeed"),
    "pm_card_chargeDeclined": ("visa", "0002", "decline"),
    "pm_card_chargeDeclinedInsufficientFunds": ("visa", "9995", "decline_insufficient_funds"),
    "pm_card_authenticationRequired": ("visa", "3184", "authenticate"),
}
TOKENS = {"tok_visa": "pm_card_visa", "tok_mastercard": "pm_card_mastercard",
          "tok_chargeDeclined": "pm_card_chargeDeclined", "tok_amex": "pm_card_amex"}


def _customer_fields(em: Emulator, p: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"metadata": as_metadata(p, (current or {}).get("metadata"))}
    for name in ("email", "name", "description", "phone"):
        if name in p:
            fields[name] = as_str(p, name) or None
    if "invoice_settings" in p:
        settings = p["invoice_settings"] if isinstance(p["invoice_settings"], dict) else {}
        merged = dict((current or {}).get("invoice_settings") or {})
        if "default_payment_method" in settings:
            ref = settings["default_payment_method"]
            if ref:
                pm = em.get("payment_method", ref, "invoice_settings[default_payment_method]")
                if current is None or pm.get("customer") != current["id"]:
                    raise invalid(f"The customer does not have a payment method with the ID {ref}. The payment "
                                  "method must be attached to the customer.", "invoice_settings[default_payment_method]")
            merged["default_payment_method"] = ref or None
        fields["invoice_settings"] = merged
    return fields


def create_customer(em: Emulator, p: dict[str, Any]) -> dict[str, Any]:
    """payment_method attaches one at creation; invoice_settings[default_payment_method] may
    name it (or its test token) to make it the default, as on Stripe."""
    clock = p.get("test_clock")
    if clock:
        em.get("test_helpers.test_clock", clock, "test_clock")
    settings = p.get("invoice_settings") if isinstance(p.get("invoice_settings"), dict) else {}
    wanted_default = settings.get("default_payment_method")
    pm = resolve(em, p["payment_method"], "payment_method") if p.get("payment_method") else None
    if wanted_default and wanted_default not in (p.get("payment_method"), pm and pm["id"]):
        raise invalid(f"The customer does not have a payment method with the ID {wanted_default}. The payment "
                      "method must be attached to the customer.", "invoice_settings[default_payment_method]")
    fields = _customer_fields(em, {k: v for k, v in p.items() if k != "invoice_settings"}, None)
    fields.update({"balance": 0, "delinquent": False, "invoice_prefix": secrets.token_hex(4).upper(),
                   "next_invoice_sequence": 1, "preferred_locales": [], "tax_exempt": "none",
                   "test_clock": clock or None, "invoice_settings": {}})
    customer = em.create("customer", fields, created=em.now(clock))
    if pm is not None:
        attach(em, pm, customer["id"])
        if wanted_default:
            customer = em.update(em.get("customer", customer["id"]), {
                "invoice_settings": {"default_payment_method": pm["id"]}})
    return customer


def update_customer(em: Emulator, customer: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    return em.update(customer, _customer_fields(em, p, customer))


def deleted_stub(oid: str, name: str) -> dict[str, Any]:
    return {"id": oid, "object": name, "deleted": True}


# --- payment methods ---------------------------------------------------------------------------

def _card(brand: str, last4: str) -> dict[str, Any]:
    return {
        "brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2034, "funding": "credit",
        "country": "US", "display_brand": brand, "regulated_status": "unregulated",
        "fingerprint": secrets.token_hex(8),
        "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
        "networks": {"available": [brand], "preferred": None}, "three_d_secure_usage": {"supported": True},
    }


def create_payment_method(em: Emulator, token: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    brand, last4, behaviour = TEST_CARDS[token]
    pm = em.create("payment_method", {
        "type": "card", "card": _card(brand, last4), "customer": None, "metadata": metadata or {},
        "billing_details": {
            "address": {}},
        "allow_redisplay": "unspecified",
    }, event=False)
    em.pm_behaviour[pm["id"]] = behaviour
    return pm


def resolve(em: Emulator, ref: Any, param: str) -> dict[str, Any]:
    """A payment method by id, or a fresh one from a test token (pm_card_visa, tok_visa...)."""
    if not isinstance(ref, str) or not ref:
        raise invalid(f"Invalid {param}: must be a payment method id", param)
    token = TOKENS.get(ref, ref)
    if token in TEST_CARDS:
        return create_payment_method(em, token)
    return em.get("payment_method", ref, param)


def create_payment_method_from_params(em: Emulator, p: dict[str, Any]) -> dict[str, Any]:
    if as_str(p, "type", "card") != "card":
        raise invalid("The local Stripe supports payment methods of type card only", "type")
    card = p.get("card") if isinstance(p.get("card"), dict) else {}
    token = TOKENS.get(card.get("token", ""), card.get("token", ""))
    if token not in TEST_CARDS:
        raise invalid(f"Use a test token in card[token] (one of {', '.join(TOKENS)}) or attach a test "
                      f"payment method ({', '.join(TEST_CARDS)})", "card[token]")
    return create_payment_method(em, token, as_metadata(p))


def attach(em: Emulator, pm: dict[str, Any], customer_id: str) -> dict[str, Any]:
    em.get("customer", customer_id, "customer")
    if pm.get("customer") == customer_id:
        return pm
    if pm.get("customer"):
        raise invalid("The payment method you provided has already been attached to a customer.", "payment_method")
    return em.update(pm, {"customer": customer_id}, event="attached")


def detach(em: Emulator, pm: dict[str, Any]) -> dict[str, Any]:
    if not pm.get("customer"):
        raise invalid(f"The payment method {pm['id']} is not attached to a customer.", "payment_method")
    customer = em.store["customer"].get(pm["customer"])
    new = em.update(pm, {"customer": None}, event="detached")
    if customer and (customer.get("invoice_settings") or {}).get("default_payment_method") == pm["id"]:
        em.update(customer, {"invoice_settings": {**customer["invoice_settings"], "default_payment_method": None}})
    return new


def default_payment_method(em: Emulator, customer_id: str, subscription: dict[str, Any] | None = None) -> str | None:
    if subscription and subscription.get("default_payment_method"):
        return subscription["default_payment_method"]
    customer = em.store["customer"].get(customer_id)
    return ((customer or {}).get("invoice_settings") or {}).get("default_payment_method")


def set_behaviour(em: Emulator, pm_id: str, behaviour: str) -> dict[str, Any]:
    pm = em.get("payment_method", pm_id)
    allowed = ("succeed", "decline", "decline_insufficient_funds", "authenticate")
    if behaviour not in allowed:
        raise invalid(f"behaviour must be one of {', '.join(allowed)}", "behaviour")
    em.pm_behaviour[pm_id] = behaviour
    return pm


# --- billing portal ----------------------------------------------------------------------------

def create_portal_session(em: Emulator, p: dict[str, Any]) -> dict[str, Any]:
    customer = em.get("customer", as_str(p, "customer", required=True), "customer")
    oid = f"bps_{secrets.token_hex(12)}"
    return em.create("billing_portal.session", {
        "customer": customer["id"], "return_url": as_str(p, "return_url"), "url": f"{em.config.public_base}/_portal/{oid}",
        "configuration": "bpc_local", "locale": None, "flow": None,
    }, oid=oid, event=False)


def ensure_customer_exists(em: Emulator, customer_id: str) -> None:
    if customer_id in em.deleted:
        raise StripeError(400, "invalid_request_error", f"No such customer: '{customer_id}' (deleted)",
                          code="resource_missing", param="customer")
    if em.store["customer"].get(customer_id) is None:
        raise missing("customer", customer_id, "customer")
