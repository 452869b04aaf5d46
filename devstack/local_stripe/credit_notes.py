"""Credit notes: adjustments of a finalized invoice.

Issued on an open invoice, a credit note is `pre_payment`: it lowers what is still due. Issued on
a paid one it is `post_payment` (a credit or refund outside the invoice). Voiding restores the
invoice's amounts. Events: credit_note.created, credit_note.updated (memo, metadata),
credit_note.voided; the invoice's own invoice.updated when its amounts change.
"""

from __future__ import annotations

from typing import Any

from devstack.local_stripe.app import Emulator
from devstack.local_stripe.errors import invalid
from devstack.local_stripe.wire import as_int, as_metadata, as_str

REASONS = ("duplicate", "fraudulent", "order_change", "product_unsatisfactory")


def _credited(em: Emulator, invoice_id: str) -> int:
    return sum(cn["amount"] for cn in em.store["credit_note"].at_positions(
        em.store["credit_note"].positions("invoice", invoice_id)) if cn["status"] == "issued")


def create_credit_note(em: Emulator, p: dict[str, Any]) -> dict[str, Any]:
    invoice = em.get("invoice", as_str(p, "invoice", required=True), "invoice")
    if invoice["status"] not in ("open", "paid"):
        raise invalid(f"Credit notes can only be issued on open or paid invoices; {invoice['id']} is "
                      f"{invoice['status']}.", "invoice")
    amount = as_int(p, "amount", minimum=1)
    if amount is None:
        raise invalid("Missing required param: amount (the local Stripe takes an amount, not lines).", "amount",
                      code="parameter_missing")
    available = invoice["total"] - _credited(em, invoice["id"])
    if amount > available:
        raise invalid(f"The credit note amount ({amount}) exceeds what the invoice has left to credit "
                      f"({available}).", "amount")
    pre = invoice["status"] == "open"
    at = em.now_for(em.store["customer"].get(invoice["customer"]))
    seq = len(em.store["credit_note"].positions("invoice", invoice["id"])) + 1
    note = em.create("credit_note", {
        "invoice": invoice["id"], "customer": invoice["customer"], "currency": invoice["currency"],
        "amount": amount, "subtotal": amount, "total": amount, "subtotal_excluding_tax": amount,
        "total_excluding_tax": amount, "amount_shipping": 0, "discount_amount": 0,
        "type": "pre_payment" if pre else "post_payment", "status": "issued",
        "reason": as_str(p, "reason", None, choices=REASONS), "memo": as_str(p, "memo"),
        "metadata": as_metadata(p), "number": f"{invoice.get('number') or invoice['id']}-CN-{seq:02d}",
        "effective_at": at, "voided_at": None, "out_of_band_amount": None,
        "lines": {"object": "list", "data": [], "has_more": False, "url": ""},
    }, created=at)
    _adjust_invoice(em, invoice, amount if pre else 0, 0 if pre else amount)
    return note


def update_credit_note(em: Emulator, note: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {"metadata": as_metadata(p, note.get("metadata"))}
    if "memo" in p:
        changes["memo"] = as_str(p, "memo") or None
    return em.update(note, changes)


def void_credit_note(em: Emulator, note: dict[str, Any]) -> dict[str, Any]:
    if note["status"] == "void":
        raise invalid(f"Credit note {note['id']} is already void.", "id")
    at = em.now_for(em.store["customer"].get(note["customer"]))
    note = em.update(note, {"status": "void", "voided_at": at}, event="voided")
    invoice = em.get("invoice", note["invoice"])
    pre = note["type"] == "pre_payment"
    _adjust_invoice(em, invoice, -note["amount"] if pre else 0, 0 if pre else -note["amount"])
    return note


def _adjust_invoice(em: Emulator, invoice: dict[str, Any], pre: int, post: int) -> None:
    changes: dict[str, Any] = {
        "pre_payment_credit_notes_amount": (invoice.get("pre_payment_credit_notes_amount") or 0) + pre,
        "post_payment_credit_notes_amount": (invoice.get("post_payment_credit_notes_amount") or 0) + post}
    if pre:
        changes["amount_due"] = invoice["amount_due"] - pre
        changes["amount_remaining"] = invoice["amount_remaining"] - pre
    em.update(invoice, changes)
