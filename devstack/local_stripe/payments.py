"""PaymentIntents, charges, refunds and disputes. A payment's outcome is the payment method's
behaviour (customers.TEST_CARDS, or what /_control/ set for it)."""

from __future__ import annotations

import secrets
from typing import Any

from devstack.local_stripe.app import Emulator
from devstack.local_stripe.customers import resolve
from devstack.local_stripe.errors import StripeError, card_error, invalid
from devstack.local_stripe.intents import PAYMENT_CONFIRMABLE, confirming, require_action
from devstack.local_stripe.wire import as_bool, as_int, as_metadata, as_str

DECLINES = {
    "decline": ("card_declined", "generic_decline", "Your card was declined."),
    "decline_insufficient_funds": ("card_declined", "insufficient_funds", "Your card has insufficient funds."),
}


def _error(em: Emulator, code: str, decline_code: str | None, message: str, pm_id: str | None,
           charge_id: str | None = None) -> dict[str, Any]:
    pm = em.store["payment_method"].get(pm_id) if pm_id else None
    return {
        "type": "card_error", "code": code, "decline_code": decline_code, "message": message,
        "charge": charge_id, "payment_method": em.render(pm) if pm else None}


def create_payment_intent(em: Emulator, p: dict[str, Any], *, customer: str | None = None,
                          description: str | None = None) -> dict[str, Any]:
    amount = as_int(p, "amount", required=True, minimum=0)
    currency = (as_str(p, "currency", required=True) or "").lower()
    customer = customer or as_str(p, "customer")
    if customer:
        em.get("customer", customer, "customer")
    pm = resolve(em, p["payment_method"], "payment_method") if p.get("payment_method") else None
    pi = em.create("payment_intent", {
        "amount": amount, "currency": currency, "customer": customer, "amount_capturable": 0,
        "amount_received": 0, "capture_method": "automatic_async", "confirmation_method": "automatic",
        "description": description or as_str(p, "description"), "metadata": as_metadata(p),
        "payment_method": pm["id"] if pm else None, "payment_method_types": ["card"],
        "status": "requires_confirmation" if pm else "requires_payment_method",
        "setup_future_usage": as_str(p, "setup_future_usage"), "receipt_email": as_str(p, "receipt_email"),
        "latest_charge": None, "last_payment_error": None, "next_action": None,
    }, created=em.now_for(em.store["customer"].get(customer) if customer else None))
    pi = em.update(pi, {"client_secret": f"{pi['id']}_secret_{secrets.token_hex(8)}"}, event=None)
    if as_bool(p, "confirm", False):
        pi = confirm_payment_intent(em, pi, {"off_session": p.get("off_session")})
    return pi


def confirm_payment_intent(em: Emulator, pi: dict[str, Any], p: dict[str, Any], *, raise_on_failure: bool = True
                           ) -> dict[str, Any]:
    """Charges the payment method. A failure is recorded (failed charge, payment_failed event)
    and then raised as Stripe's 402 card_error unless raise_on_failure is False."""
    pm_id, behaviour = confirming(em, pi, p, PAYMENT_CONFIRMABLE)
    off_session = as_bool(p, "off_session", False)
    if behaviour == "authenticate" and pi["status"] != "requires_action":
        if not off_session:
            return require_action(em, pi, pm_id, {"type": "three_d_secure_redirect"})
        error = _error(em, "authentication_required", "authentication_required",
                       "Your card was declined. This transaction requires authentication.", pm_id)
        pi = em.update(pi, {"payment_method": pm_id, "status": "requires_payment_method",
                            "last_payment_error": error}, event="payment_failed")
        if raise_on_failure:
            raise _as_card_error(em, pi)
        return pi
    charge = _charge(em, pi, pm_id, behaviour)
    if charge["status"] == "succeeded":
        return em.update(pi, {"payment_method": pm_id, "status": "succeeded", "amount_received": pi["amount"],
                              "latest_charge": charge["id"], "last_payment_error": None, "next_action": None},
                         event="succeeded")
    code, decline, message = DECLINES.get(behaviour, DECLINES["decline"])
    pi = em.update(pi, {"payment_method": pm_id, "status": "requires_payment_method",
                        "latest_charge": charge["id"], "next_action": None,
                        "last_payment_error": _error(em, code, decline, message, pm_id, charge["id"])},
                   event="payment_failed")
    if raise_on_failure:
        raise _as_card_error(em, pi)
    return pi


def _as_card_error(em: Emulator, pi: dict[str, Any]) -> StripeError:
    err = pi["last_payment_error"]
    return card_error(err["message"], err["code"], decline_code=err.get("decline_code"),
                      extra={"payment_intent": em.render(pi), "charge": err.get("charge")})


def _charge(em: Emulator, pi: dict[str, Any], pm_id: str, behaviour: str) -> dict[str, Any]:
    ok = behaviour == "succeed"
    code, decline, message = DECLINES.get(behaviour, DECLINES["decline"])
    card = (em.store["payment_method"].get(pm_id) or {}).get("card") or {}
    customer = em.store["customer"].get(pi["customer"]) if pi.get("customer") else None
    charge = em.create("charge", {
        "amount": pi["amount"], "amount_captured": pi["amount"] if ok else 0, "amount_refunded": 0,
        "currency": pi["currency"], "customer": pi.get("customer"), "description": pi.get("description"),
        "payment_intent": pi["id"], "payment_method": pm_id, "captured": ok, "paid": ok, "refunded": False,
        "disputed": False, "status": "succeeded" if ok else "failed",
        "failure_code": None if ok else code, "failure_message": None if ok else message,
        "outcome": {
            "network_status": "approved_by_network" if ok else "declined_by_network",
            "reason": None if ok else decline, "risk_level": "normal", "seller_message":
            "Payment complete." if ok else "The bank did not return any further details with this decline.",
            "type": "authorized" if ok else "issuer_declined"},
        "billing_details": {
            "address": {}},
        "payment_method_details": {"type": "card", "card": {
            "brand": card.get("brand"), "last4": card.get("last4"), "exp_month": card.get("exp_month"),
            "exp_year": card.get("exp_year"), "funding": card.get("funding"), "country": card.get("country"),
            "fingerprint": card.get("fingerprint"), "network": card.get("brand")}},
        "metadata": dict(pi.get("metadata") or {}), "fraud_details": {},
        "calculated_statement_descriptor": "LOCAL STRIPE",
    }, created=em.now_for(customer), event=False)
    em.emit("charge.succeeded" if ok else "charge.failed", charge)
    return charge


def cancel_payment_intent(em: Emulator, pi: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    if pi["status"] in ("succeeded", "canceled"):
        raise invalid(f"You cannot cancel this PaymentIntent because it has a status of {pi['status']}.",
                      code="payment_intent_unexpected_state")
    reason = as_str(p, "cancellation_reason", "requested_by_customer")
    return em.update(pi, {"status": "canceled", "canceled_at": em.now(), "cancellation_reason": reason,
                          "next_action": None}, event="canceled")


# --- refunds and disputes ---------------------------------------------------------------------

def create_refund(em: Emulator, p: dict[str, Any]) -> dict[str, Any]:
    if p.get("charge"):
        charge = em.get("charge", p["charge"], "charge")
    elif p.get("payment_intent"):
        pi = em.get("payment_intent", p["payment_intent"], "payment_intent")
        if not pi.get("latest_charge"):
            raise invalid(f"PaymentIntent {pi['id']} has no charge to refund.", "payment_intent")
        charge = em.get("charge", pi["latest_charge"], "payment_intent")
    else:
        raise invalid("One of charge or payment_intent is required.", "charge", code="parameter_missing")
    if charge["status"] != "succeeded":
        raise invalid(f"Charge {charge['id']} has not succeeded; nothing to refund.", "charge")
    remaining = charge["amount_captured"] - charge["amount_refunded"]
    amount = as_int(p, "amount", remaining, minimum=1)
    assert amount is not None
    if amount > remaining:
        code = "charge_already_refunded" if remaining == 0 else "amount_too_large"
        raise invalid(f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})",
                      "amount", code=code)
    reason = as_str(p, "reason", None, choices=("duplicate", "fraudulent", "requested_by_customer"))
    refund = em.create("refund", {
        "amount": amount, "charge": charge["id"], "currency": charge["currency"],
        "payment_intent": charge.get("payment_intent"), "reason": reason, "status": "succeeded",
        "metadata": as_metadata(p), "balance_transaction": None,
    })
    refunded = charge["amount_refunded"] + amount
    em.update(charge, {"amount_refunded": refunded, "refunded": refunded == charge["amount_captured"]},
              event="refunded")
    return refund


def create_dispute(em: Emulator, p: dict[str, Any]) -> dict[str, Any]:
    charge = em.get("charge", p.get("charge"), "charge")
    if charge["status"] != "succeeded":
        raise invalid(f"Charge {charge['id']} has not succeeded; it cannot be disputed.", "charge")
    if charge.get("disputed"):
        raise invalid(f"Charge {charge['id']} is already disputed.", "charge")
    amount = as_int(p, "amount", charge["amount_captured"] - charge["amount_refunded"], minimum=1)
    reason = as_str(p, "reason", "fraudulent")
    dispute = em.create("dispute", {
        "amount": amount, "charge": charge["id"], "currency": charge["currency"],
        "payment_intent": charge.get("payment_intent"), "reason": reason, "status": "needs_response",
        "metadata": {}, "is_charge_refundable": False, "balance_transactions": [],
        "evidence": {},
        "evidence_details": {
            "due_by": em.now() + 7 * 86400, "has_evidence": False, "past_due": False, "submission_count": 0},
    })
    em.update(charge, {"disputed": True}, event=None)
    return dispute


def close_dispute(em: Emulator, dispute: dict[str, Any], status: str = "lost") -> dict[str, Any]:
    if dispute["status"] in ("won", "lost"):
        raise invalid(f"Dispute {dispute['id']} is already closed ({dispute['status']}).")
    if status not in ("won", "lost"):
        raise invalid("status must be won or lost", "status")
    return em.update(dispute, {"status": status}, event="closed")
