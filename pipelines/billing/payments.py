"""Payment Processor: payment methods, one-off charges, invoice payment, refunds and disputes.

A charge that needs the customer (3-D Secure; off-session Stripe declines it with
`authentication_required`) comes back as `requires_action` with the PaymentIntent's client
secret, for the caller to hand to Stripe.js on the payer's next visit; a declined one comes back as `failed` with
Stripe's code. Neither raises: the caller decides what to tell the payer.
"""

from __future__ import annotations

from dataclasses import dataclass

import stripe

from pipelines.billing import keys
from pipelines.billing.subscriptions import default_payment_method


class PaymentError(ValueError):
    """A payment action that cannot be attempted as asked (names the id and why)."""


# --- payment methods -------------------------------------------------------------------------

def create_setup_intent(client: stripe.StripeClient, customer_id: str, *,
                        scope: str | None = None) -> stripe.SetupIntent:
    """A SetupIntent to save a payment method for off-session use; give `client_secret` to the payer."""
    params = {"customer": customer_id, "usage": "off_session"}
    return client.v1.setup_intents.create(params, keys.update_options("setup_intent.create", customer_id,
                                                                      params=params, scope=scope))


def attach_payment_method(client: stripe.StripeClient, payment_method_id: str, customer_id: str) -> stripe.PaymentMethod:
    params = {"customer": customer_id}
    return client.v1.payment_methods.attach(payment_method_id, params,
                                            keys.options("payment_method.attach", payment_method_id, params=params))


def set_default_payment_method(client: stripe.StripeClient, customer_id: str, payment_method_id: str,
                               *, scope: str | None = None) -> stripe.Customer:
    params = {"invoice_settings": {"default_payment_method": payment_method_id}}
    return client.v1.customers.update(customer_id, params, keys.update_options(
        "customer.default-payment-method", customer_id, params=params, scope=scope))


def detach_payment_method(client: stripe.StripeClient, payment_method_id: str) -> stripe.PaymentMethod:
    """Detach; a payment method already detached (a retry, or someone else) is returned as it is."""
    current = client.v1.payment_methods.retrieve(payment_method_id)
    if not current.to_dict().get("customer"):
        return current
    return client.v1.payment_methods.detach(payment_method_id, None,
                                            keys.update_options("payment_method.detach", payment_method_id))


# --- charges ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChargeResult:
    status: str                       # succeeded, processing, requires_action, failed, ...
    payment_intent_id: str | None
    client_secret: str | None = None  # only for requires_action: hand it to the payer's browser
    failure_code: str | None = None
    invoice_id: str | None = None

    @property
    def needs_action(self) -> bool:
        return self.status == "requires_action"

    def __repr__(self) -> str:  # the client secret stays out of logs
        return (f"ChargeResult(status={self.status!r}, payment_intent_id={self.payment_intent_id!r}, "
                f"failure_code={self.failure_code!r}, invoice_id={self.invoice_id!r})")


def _result(pi, invoice_id: str | None = None) -> ChargeResult:
    pi = keys.plain(pi)
    status = pi["status"]
    error = pi.get("last_payment_error") or {}
    return ChargeResult(status=status, payment_intent_id=pi["id"],
                        client_secret=pi.get("client_secret") if status == "requires_action" else None,
                        failure_code=error.get("decline_code") or error.get("code") or None, invoice_id=invoice_id)


def _from_card_error(exc: stripe.StripeError, invoice_id: str | None = None) -> ChargeResult:
    err = exc.error
    pi = keys.plain(getattr(err, "payment_intent", None)) if err is not None else None
    code = (getattr(err, "decline_code", None) or getattr(err, "code", None)) if err is not None else None
    # Off-session, a card that needs 3-D Secure is declined with authentication_required: the
    # payer must come back on-session and confirm this PaymentIntent with its client secret.
    if pi is not None and (pi.get("status") == "requires_action" or code == "authentication_required"):
        return ChargeResult("requires_action", pi["id"], client_secret=pi.get("client_secret"),
                            failure_code=code, invoice_id=invoice_id)
    return ChargeResult("failed", pi["id"] if pi is not None else None, failure_code=code or "card_error",
                        invoice_id=invoice_id)


def charge(client: stripe.StripeClient, *, customer_id: str, amount: int, currency: str, reference: str,
           description: str = "", payment_method_id: str | None = None,
           metadata: dict[str, str] | None = None) -> ChargeResult:
    """A one-off charge outside subscriptions, confirmed off-session on the default payment method.

    `reference` names this charge in the caller's world (an order id): the same reference is
    the same charge, so a retry never charges twice.
    """
    if amount <= 0:
        raise PaymentError(f"charge for {customer_id}: amount must be positive, got {amount}")
    if not reference:
        raise PaymentError("charge: a reference is required (it makes the charge idempotent)")
    pm = payment_method_id
    if pm is None:
        pm = default_payment_method(client.v1.customers.retrieve(customer_id))
        if not pm:
            raise PaymentError(f"customer {customer_id} has no default payment method")
    params = {"customer": customer_id, "amount": amount, "currency": currency.lower(), "payment_method": pm,
              "off_session": True, "confirm": True, "description": description,
              "metadata": {**(metadata or {}), "reference": reference}}
    try:
        pi = client.v1.payment_intents.create(params, keys.options("payment_intent.create", customer_id, reference,
                                                                   params=params))
    except stripe.CardError as exc:
        return _from_card_error(exc)
    return _result(pi)


def pay_invoice(client: stripe.StripeClient, invoice_id: str, *, payment_method_id: str | None = None,
                scope: str | None = None) -> ChargeResult:
    """Pay (or retry) an open invoice now. Keyed per call: each retry of a failed invoice is a new attempt."""
    invoice = keys.plain(client.v1.invoices.retrieve(invoice_id))
    if invoice["status"] == "paid":
        return ChargeResult("succeeded", None, invoice_id=invoice_id)
    if invoice["status"] != "open":
        raise PaymentError(f"invoice {invoice_id} is {invoice['status']}; only an open invoice can be paid")
    params = {"off_session": True}
    if payment_method_id:
        params["payment_method"] = payment_method_id
    try:
        paid = client.v1.invoices.pay(invoice_id, params, keys.update_options("invoice.pay", invoice_id,
                                                                              params=params, scope=scope))
    except stripe.CardError as exc:
        return _from_card_error(exc, invoice_id)
    return ChargeResult("succeeded" if paid["status"] == "paid" else paid["status"], None, invoice_id=invoice_id)


# --- refunds and disputes --------------------------------------------------------------------

def refund(client: stripe.StripeClient, payment_intent_id: str, *, amount: int | None = None,
           reason: str | None = None, scope: str | None = None) -> stripe.Refund:
    """Refund a payment in full (amount None) or in part. The same refund asked again (same payment,
    amount and scope) is one refund; pass a new `scope` for a second partial refund of the same amount."""
    if amount is not None and amount <= 0:
        raise PaymentError(f"refund of {payment_intent_id}: amount must be positive, got {amount}")
    if reason is not None and reason not in ("duplicate", "fraudulent", "requested_by_customer"):
        raise PaymentError(f"refund reason must be duplicate, fraudulent or requested_by_customer; got {reason!r}")
    params: dict = {"payment_intent": payment_intent_id}
    if amount is not None:
        params["amount"] = amount
    if reason:
        params["reason"] = reason
    return client.v1.refunds.create(params, keys.options("refund.create", payment_intent_id,
                                                         params=params, scope=scope))


DISPUTE_FIELDS = ("id", "amount", "currency", "status", "reason", "charge", "payment_intent", "created")


def record_dispute(client: stripe.StripeClient, dispute_id: str) -> dict:
    """The dispute as a stripe_payments-shaped record (kind 'dispute'), fetched from Stripe."""
    d = keys.plain(client.v1.disputes.retrieve(dispute_id))
    pi = d.get("payment_intent")
    return {"payment_id": d["id"], "kind": "dispute", "amount": d["amount"], "currency": d["currency"],
            "status": d["status"], "reason": d.get("reason"),
            "charge_id": d["charge"] if isinstance(d.get("charge"), str) else (d.get("charge") or {}).get("id"),
            "payment_intent_id": pi if isinstance(pi, str) or pi is None else pi.get("id"),
            "created": d["created"]}
