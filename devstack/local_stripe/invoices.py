"""Invoices: created by a subscription's cycle or by hand, finalized, paid (through a PaymentIntent
on the customer's payment method), failed (the retry schedule's next attempt), voided, marked
uncollectible. Paying or failing the latest invoice of a subscription moves its status (active,
past_due); the subscriptions themselves and the passage of time are billing.py's."""

from __future__ import annotations

from typing import Any

from devstack.local_stripe.app import Emulator
from devstack.local_stripe.customers import default_payment_method, resolve
from devstack.local_stripe.errors import card_error, invalid
from devstack.local_stripe.payments import confirm_payment_intent, create_payment_intent
from devstack.local_stripe.shapes import compact
from devstack.local_stripe.store import new_id
from devstack.local_stripe.wire import as_bool, as_int, as_metadata, as_str


def set_status(em: Emulator, sub_id: str, status: str) -> dict[str, Any]:
    sub = em.get("subscription", sub_id)
    if sub["status"] == status:
        return sub
    return em.update(sub, {"status": status})


def _invoice_fields(em: Emulator, customer: dict[str, Any], currency: str) -> dict[str, Any]:
    return {
        "customer": customer["id"], "customer_email": customer.get("email"), "customer_name": customer.get("name"),
        "customer_phone": customer.get("phone"), "customer_tax_exempt": "none", "customer_tax_ids": [],
        "currency": currency, "status": "draft", "account_country": "US", "account_name": "Local Stripe",
        "attempt_count": 0, "attempted": False, "auto_advance": True, "metadata": {},
        "collection_method": "charge_automatically", "livemode": False,
        "issuer": {"type": "self"},
        "status_transitions": {},
        "payments": {"object": "list", "data": [], "has_more": False, "url": "/v1/invoice_payments"},
        "lines": {"object": "list", "data": [], "has_more": False, "url": ""},
        "automatic_tax": {"enabled": False},
        "payment_settings": {},
        "rendering": None, "starting_balance": 0, "ending_balance": None, "total_discount_amounts": [],
        "total_taxes": [], "total_pretax_credit_amounts": [], "discounts": [], "default_tax_rates": [],
        "amount_due": 0, "amount_paid": 0, "amount_remaining": 0, "amount_overpaid": 0,
        "amount_paid_off_stripe": 0, "amount_shipping": 0, "subtotal": 0, "total": 0,
        "subtotal_excluding_tax": 0, "total_excluding_tax": 0, "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0, "test_clock": customer.get("test_clock"),
    }


def cycle_invoice(em: Emulator, sub: dict[str, Any], reason: str, period: tuple[int, int], at: int,
                  finalize: bool = True, trial: bool = False, items: list[str] | None = None) -> dict[str, Any]:
    """The invoice of a period: every item, or only `items` (those renewing under flexible billing)."""
    customer = em.get("customer", sub["customer"], "customer")
    iid = new_id("invoice")
    lines = []
    for it in sub["items"]["data"]:
        if items is not None and it["id"] not in items:
            continue
        amount = 0 if trial else it["price"]["unit_amount"] * it["quantity"]
        label = it["price"].get("nickname") or it["price"]["product"]
        lines.append(compact("line_item", {
            "id": new_id("line_item"), "object": "line_item", "amount": amount, "currency": sub["currency"],
            "description": f"Trial period for {label}" if trial else f"{it['quantity']} × {label}",
            "invoice": iid, "quantity": it["quantity"], "subtotal": amount, "metadata": {}, "discountable": True,
            "discount_amounts": [], "discounts": [], "taxes": [], "pretax_credit_amounts": [],
            "period": {"start": period[0], "end": period[1]}, "subscription": sub["id"],
            "parent": {"type": "subscription_item_details",
                "subscription_item_details": {
                    "subscription": sub["id"], "subscription_item": it["id"], "proration": False,
                    "invoice_item": None, "proration_details": {"credited_items": None}}},
            "pricing": {"type": "price_details", "price_details": {"price": it["price"]["id"],
                        "product": it["price"]["product"]}, "unit_amount_decimal": str(it["price"]["unit_amount"])},
        }))
    total = sum(line["amount"] for line in lines)
    fields = _invoice_fields(em, customer, sub["currency"])
    fields.update({
        "billing_reason": reason, "period_start": period[0], "period_end": period[1],
        "lines": {"object": "list", "data": lines, "has_more": False, "total_count": len(lines),
                  "url": f"/v1/invoices/{iid}/lines"},
        "subtotal": total, "total": total, "subtotal_excluding_tax": total, "total_excluding_tax": total,
        "amount_due": total, "amount_remaining": total,
        "collection_method": sub.get("collection_method") or "charge_automatically",
        "parent": {"type": "subscription_details", "subscription_details":
                              {
                                  "subscription": sub["id"], "metadata": dict(sub.get("metadata") or {})}},
    })
    invoice = em.create("invoice", fields, oid=iid, created=at)
    em.update(sub, {"latest_invoice": iid}, event=None)
    if not finalize:
        return invoice
    invoice = finalize_invoice(em, invoice, at)
    if total == 0:
        invoice = _mark_paid(em, invoice, at)
    return invoice


def create_invoice(em: Emulator, p: dict[str, Any]) -> dict[str, Any]:
    customer = em.get("customer", as_str(p, "customer", required=True), "customer")
    fields = _invoice_fields(em, customer, (as_str(p, "currency") or "usd").lower())
    iid = new_id("invoice")
    fields.update({"billing_reason": "manual", "metadata": as_metadata(p), "description": as_str(p, "description"),
                   "auto_advance": as_bool(p, "auto_advance", False),
                   "collection_method": as_str(p, "collection_method", "charge_automatically",
                                               choices=("charge_automatically", "send_invoice")),
                   "days_until_due": as_int(p, "days_until_due"), "period_start": em.now_for(customer),
                   "period_end": em.now_for(customer)})
    fields["lines"] = {**fields["lines"], "url": f"/v1/invoices/{iid}/lines"}
    return em.create("invoice", fields, oid=iid, created=em.now_for(customer))


def finalize_invoice(em: Emulator, invoice: dict[str, Any], at: int | None = None) -> dict[str, Any]:
    if invoice["status"] != "draft":
        raise invalid("This invoice is already finalized, you can't re-finalize a non-draft invoice.",
                      code="invoice_not_editable")
    customer = em.get("customer", invoice["customer"], "customer")
    at = em.now_for(customer) if at is None else at
    seq = customer.get("next_invoice_sequence") or 1
    em.update(customer, {"next_invoice_sequence": seq + 1}, event=None)
    return em.update(invoice, {
        "status": "open", "number": f"{customer.get('invoice_prefix') or 'LOCAL'}-{seq:04d}", "effective_at": at,
        "status_transitions": {**invoice["status_transitions"], "finalized_at": at},
        "hosted_invoice_url": f"{em.config.public_base}/_invoice/{invoice['id']}",
        "invoice_pdf": f"{em.config.public_base}/_invoice/{invoice['id']}/pdf",
        "ending_balance": 0, "due_date": (at + 86400 * invoice["days_until_due"]) if invoice.get("days_until_due") else None,
    }, event="finalized")


def _mark_paid(em: Emulator, invoice: dict[str, Any], at: int, pi_id: str | None = None) -> dict[str, Any]:
    invoice = em.update(invoice, {
        "status": "paid", "amount_paid": invoice["amount_due"], "amount_remaining": 0,
        "next_payment_attempt": None, "attempted": True, "auto_advance": False,
        "status_transitions": {**invoice["status_transitions"], "paid_at": at},
    }, event="paid")
    em.emit("invoice.payment_succeeded", invoice)
    sub_id = subscription_of(invoice)
    if sub_id:
        sub = em.get("subscription", sub_id)
        em.cycles[sub_id].update(failed_at=None, retries=0)
        if sub["status"] in ("incomplete", "past_due", "unpaid") and invoice["id"] == sub.get("latest_invoice"):
            set_status(em, sub_id, "active")
    customer = em.store["customer"].get(invoice["customer"])
    if customer and customer.get("delinquent"):
        em.update(customer, {"delinquent": False})
    return invoice


def subscription_of(invoice: dict[str, Any]) -> str | None:
    parent = invoice.get("parent") or {}
    return ((parent.get("subscription_details") or {}).get("subscription")) if parent else None


def pay_invoice(em: Emulator, invoice: dict[str, Any], *, payment_method: Any = None, off_session: bool = True,
                raise_on_failure: bool = False) -> dict[str, Any]:
    if invoice["status"] == "paid":
        raise invalid("Invoice is already paid", "id", code="invoice_already_paid")
    if invoice["status"] != "open":
        if invoice["status"] == "draft":
            invoice = finalize_invoice(em, invoice)
        else:
            raise invalid(f"You cannot pay an invoice with status {invoice['status']}.", "id")
    customer = em.get("customer", invoice["customer"], "customer")
    at = em.now_for(customer)
    if invoice["amount_remaining"] == 0:
        return _mark_paid(em, invoice, at)
    sub_id = subscription_of(invoice)
    sub = em.store["subscription"].get(sub_id) if sub_id else None
    pm_id = resolve(em, payment_method, "payment_method")["id"] if payment_method else \
        default_payment_method(em, invoice["customer"], sub)
    invoice = em.update(invoice, {"attempt_count": invoice["attempt_count"] + 1, "attempted": True}, event=None)
    if not pm_id:
        return _payment_failed(em, invoice, at, None, raise_on_failure,
                               "This customer has no attached payment source or default payment method.")
    pi = create_payment_intent(em, {"amount": invoice["amount_remaining"], "currency": invoice["currency"],
                                    "payment_method": pm_id}, customer=invoice["customer"],
                               description="Subscription creation" if invoice.get("billing_reason") ==
                               "subscription_create" else "Subscription update" if sub_id else None)
    pi = confirm_payment_intent(em, pi, {"off_session": "true" if off_session else "false"}, raise_on_failure=False)
    payment = {"id": f"inpay_{pi['id'][3:]}", "object": "invoice_payment", "amount_paid":
               pi["amount"] if pi["status"] == "succeeded" else None, "amount_requested": pi["amount"],
               "created": at, "currency": pi["currency"], "invoice": invoice["id"], "is_default": True,
               "livemode": False, "payment": {
                   "type": "payment_intent", "payment_intent": pi["id"]},
               "status": "paid" if pi["status"] == "succeeded" else "open",
               "status_transitions": {"canceled_at": None, "paid_at": at if pi["status"] == "succeeded" else None}}
    others = [{**x, "is_default": False} for x in invoice["payments"]["data"] if x["id"] != payment["id"]]
    invoice = em.update(invoice, {"payments": {**invoice["payments"], "data": others + [payment],
                                               "total_count": len(others) + 1}}, event=None)
    if pi["status"] == "succeeded":
        return _mark_paid(em, invoice, at, pi["id"])
    if pi["status"] == "requires_action":
        em.emit("invoice.payment_action_required", invoice)
        return invoice
    err = pi.get("last_payment_error") or {}
    return _payment_failed(em, invoice, at, pi, raise_on_failure, err.get("message") or "Your card was declined.")


def _payment_failed(em: Emulator, invoice: dict[str, Any], at: int, pi: dict[str, Any] | None,
                    raise_on_failure: bool, message: str) -> dict[str, Any]:
    sub_id = subscription_of(invoice)
    next_attempt = None
    if sub_id and invoice.get("billing_reason") != "subscription_create":
        cyc = em.cycles[sub_id]
        if cyc["failed_at"] is None:
            cyc["failed_at"] = at
        if cyc["retries"] < len(em.config.retry_days):
            next_attempt = cyc["failed_at"] + 86400 * em.config.retry_days[cyc["retries"]]
    invoice = em.update(invoice, {"next_payment_attempt": next_attempt}, event=None)
    em.emit("invoice.payment_failed", invoice)
    customer = em.store["customer"].get(invoice["customer"])
    if customer and not customer.get("delinquent"):
        em.update(customer, {"delinquent": True})
    if sub_id:
        sub = em.get("subscription", sub_id)
        if sub["status"] in ("active", "trialing") and invoice["id"] == sub.get("latest_invoice"):
            set_status(em, sub_id, "past_due")
    if raise_on_failure:
        err = (pi or {}).get("last_payment_error") or {}
        raise card_error(message, err.get("code") or "card_declined", decline_code=err.get("decline_code"),
                         extra={"payment_intent": em.render(pi) if pi else None})
    return invoice


def void_invoice(em: Emulator, invoice: dict[str, Any]) -> dict[str, Any]:
    if invoice["status"] not in ("open", "uncollectible"):
        raise invalid(f"You can only void open or uncollectible invoices; this one is {invoice['status']}.", "id")
    at = em.now_for(em.store["customer"].get(invoice["customer"]))
    return em.update(invoice, {"status": "void", "next_payment_attempt": None, "auto_advance": False,
                               "status_transitions": {**invoice["status_transitions"], "voided_at": at}},
                     event="voided")


def mark_uncollectible(em: Emulator, invoice: dict[str, Any]) -> dict[str, Any]:
    if invoice["status"] != "open":
        raise invalid(f"You can only mark open invoices uncollectible; this one is {invoice['status']}.", "id")
    at = em.now_for(em.store["customer"].get(invoice["customer"]))
    return em.update(invoice, {"status": "uncollectible", "next_payment_attempt": None, "auto_advance": False,
                               "status_transitions": {**invoice["status_transitions"],
                                                      "marked_uncollectible_at": at}},
                     event="marked_uncollectible")
