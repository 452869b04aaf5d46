"""Confirming a PaymentIntent or a SetupIntent starts the same way (`confirming`: the status
allows it, the payment method given or set, how it behaves), and a card that needs 3-D Secure on
session stops both at `requires_action`. SetupIntents themselves live here too."""

from __future__ import annotations

import secrets
from typing import Any

from devstack.local_stripe.app import Emulator
from devstack.local_stripe.customers import attach, resolve
from devstack.local_stripe.errors import invalid
from devstack.local_stripe.wire import as_metadata, as_str

PAYMENT_CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
SETUP_CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action", "processing")
_NAMES = {"payment_intent": "PaymentIntent", "setup_intent": "SetupIntent"}


def confirming(em: Emulator, intent: dict[str, Any], p: dict[str, Any], confirmable: tuple[str, ...]
               ) -> tuple[str, str]:
    """(payment method id, its behaviour) for a confirm; refuses an intent whose status cannot be
    confirmed, or one without a payment method, as Stripe does."""
    name, code = _NAMES[intent["object"]], f"{intent['object']}_unexpected_state"
    if intent["status"] not in confirmable:
        raise invalid(f"You cannot confirm this {name} because it has a status of {intent['status']}.", code=code)
    pm_id = intent.get("payment_method")
    if p.get("payment_method"):
        pm_id = resolve(em, p["payment_method"], "payment_method")["id"]
    if not pm_id:
        raise invalid(f"You cannot confirm this {name} because it's missing a payment method.", "payment_method",
                      code=code)
    return pm_id, em.pm_behaviour.get(pm_id, "succeed")


def require_action(em: Emulator, intent: dict[str, Any], pm_id: str, sdk: dict[str, Any]) -> dict[str, Any]:
    """The customer must authenticate (3-D Secure) before the intent can go on."""
    return em.update(intent, {"payment_method": pm_id, "status": "requires_action",
                              "next_action": {"type": "use_stripe_sdk", "use_stripe_sdk": sdk}},
                     event="requires_action")


def create_setup_intent(em: Emulator, p: dict[str, Any]) -> dict[str, Any]:
    customer = p.get("customer")
    if customer:
        em.get("customer", customer, "customer")
    pm = resolve(em, p["payment_method"], "payment_method") if p.get("payment_method") else None
    seti = em.create("setup_intent", {
        "customer": customer or None, "payment_method": pm["id"] if pm else None,
        "status": "requires_confirmation" if pm else "requires_payment_method",
        "usage": as_str(p, "usage", "off_session", choices=("off_session", "on_session")),
        "payment_method_types": p.get("payment_method_types") or ["card"], "metadata": as_metadata(p),
        "client_secret": None, "description": as_str(p, "description"),
    })
    seti = em.update(seti, {"client_secret": f"{seti['id']}_secret_{secrets.token_hex(8)}"}, event=None)
    if str(p.get("confirm", "")).lower() == "true":
        seti = confirm_setup_intent(em, seti, {})
    return seti


def confirm_setup_intent(em: Emulator, seti: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    pm_id, behaviour = confirming(em, seti, p, SETUP_CONFIRMABLE)
    if behaviour == "authenticate" and seti["status"] != "requires_action":
        return require_action(em, seti, pm_id, {})
    if seti.get("customer"):
        attach(em, em.get("payment_method", pm_id), seti["customer"])
    return em.update(seti, {"payment_method": pm_id, "status": "succeeded", "next_action": None},
                     event="succeeded")


def cancel_setup_intent(em: Emulator, seti: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    if seti["status"] == "succeeded":
        raise invalid("You cannot cancel this SetupIntent because it has a status of succeeded.",
                      code="setup_intent_unexpected_state")
    return em.update(seti, {"status": "canceled", "cancellation_reason": as_str(p, "cancellation_reason")},
                     event="canceled")
