"""Dunning and billing notices: which Stripe events become which email, sent once each.

    notices_for(events, directory) -> list[EmailRequest]       pure: event payloads in, requests out
    subscription_required_notices(rows, today) -> list[EmailRequest]

| trigger                                         | kind                   |
|-------------------------------------------------|------------------------|
| invoice.payment_failed                          | payment-failed         |
| subscription status becomes past_due            | subscription-past-due  |
| customer.subscription.deleted                   | subscription-canceled  |
| customer.subscription.trial_will_end            | trial-will-end         |
| invoice.paid after at least one failed attempt  | payment-succeeded      |

The request id is derived from the Stripe event id (`stripe:<evt_id>:<kind>`), and the email
pipeline never sends a request id twice, so a redelivered or replayed event does not email
twice. Before mailing, each notice is checked against the current state in the tables (the
`Directory`): a late `payment_failed` for an invoice that has since been paid, or a past-due
notice for a subscription that is active again, is dropped, because Stripe delivers events out
of order.

Where it hooks in: the Stripe ingest consumer's `after_commit` passes the batch's events (all
of them, duplicates included: `billing_notices` remembers what was dispatched, so a crash
between commit and dispatch is repaired by the redelivery) to `send_notices()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

from pipelines.billing.vocab import InvoiceStatus, SubscriptionStatus
from pipelines.email.dispatch import build_request
from pipelines.email.request import BadRequest, EmailRequest

PAYMENT_FAILED = "payment-failed"
PAST_DUE = "subscription-past-due"
CANCELED = "subscription-canceled"
TRIAL_WILL_END = "trial-will-end"
PAYMENT_SUCCEEDED = "payment-succeeded"
SUBSCRIPTION_REQUIRED = "organization-subscription-required"

# invoice.paid only: Stripe also sends invoice.payment_succeeded for the same payment.
NOTICE_EVENT_TYPES = ("invoice.payment_failed", "invoice.paid",
                      "customer.subscription.updated", "customer.subscription.deleted",
                      "customer.subscription.trial_will_end")


@dataclass(frozen=True)
class Contact:
    """Who hears about an organisation's billing: its billing email, as the organisation's user."""
    organization_id: str
    organization_name: str
    email: str
    username: str
    verified: bool = True


class Directory(Protocol):
    """Current state from the tables (notices.TablesDirectory implements it over DuckDB)."""
    def contact_for_customer(self, customer_id: str) -> Contact | None: ...
    def invoice_status(self, invoice_id: str) -> str | None: ...
    def subscription_status(self, subscription_id: str) -> str | None: ...
    def plan_name(self, subscription: Mapping[str, Any]) -> str: ...
    def invoice(self, invoice_id: str) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class Skipped:
    event_id: str
    kind: str
    reason: str


def request_id_for(event_id: str, kind: str) -> str:
    return f"stripe:{event_id}:{kind}"


def _id(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.get("id")


def _day(ts: int | None) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d") if ts else ""


def _money(minor: int | None, currency: str | None) -> tuple[str, str]:
    zero_decimal = {"jpy", "krw", "vnd", "clp", "isk", "ugx", "xaf", "xof", "bif", "djf", "gnf", "kmf",
                    "mga", "pyg", "rwf", "vuv", "xpf"}
    cur = (currency or "").lower()
    amount = int(minor or 0)
    return (f"{amount}" if cur in zero_decimal else f"{amount / 100:.2f}"), cur


def _kind_and_context(event: Mapping[str, Any], directory: Directory) -> tuple[str, str | None, dict] | str | None:
    """(kind, customer id, context) for a notice-worthy event; a string is why it is skipped; None: not a trigger."""
    etype = event.get("type")
    obj = (event.get("data") or {}).get("object") or {}
    previous = (event.get("data") or {}).get("previous_attributes")
    if etype == "invoice.payment_failed":
        if directory.invoice_status(obj["id"]) in InvoiceStatus.SETTLED:
            return "invoice is no longer open"
        amount, currency = _money(obj.get("amount_due"), obj.get("currency"))
        ctx = {"amount": amount, "currency": currency, "invoice_url": obj.get("hosted_invoice_url") or ""}
        if obj.get("next_payment_attempt"):
            ctx["next_attempt_date"] = _day(obj["next_payment_attempt"])
        return PAYMENT_FAILED, _id(obj.get("customer")), ctx
    if etype == "invoice.paid":
        if int(obj.get("attempt_count") or 0) <= 1:
            return None  # paid at the first attempt: nothing to tell
        amount, currency = _money(obj.get("amount_paid"), obj.get("currency"))
        paid_at = ((obj.get("status_transitions") or {}).get("paid_at")) or event.get("created")
        ctx = {"amount": amount, "currency": currency, "paid_date": _day(paid_at)}
        if obj.get("hosted_invoice_url"):
            ctx["invoice_url"] = obj["hosted_invoice_url"]
        return PAYMENT_SUCCEEDED, _id(obj.get("customer")), ctx
    if etype == "customer.subscription.trial_will_end":
        if directory.subscription_status(obj["id"]) not in (None, SubscriptionStatus.TRIALING):
            return "subscription is no longer trialing"
        return TRIAL_WILL_END, _id(obj.get("customer")), {
            "plan_name": directory.plan_name(obj), "trial_end_date": _day(obj.get("trial_end"))}
    if etype == "customer.subscription.deleted":   # Stripe's one event for a subscription that ended
        ended = obj.get("ended_at") or obj.get("canceled_at") or event.get("created")
        return CANCELED, _id(obj.get("customer")), {"plan_name": directory.plan_name(obj), "ends_at": _day(ended)}
    # previous_attributes None means the carrier did not keep it: the status alone decides, and
    # the kind's 1-day repeat window keeps repeated updates to one email a day.
    became_past_due = obj.get("status") == SubscriptionStatus.PAST_DUE and (
        previous is None or ("status" in previous and previous["status"] != SubscriptionStatus.PAST_DUE))
    if etype == "customer.subscription.updated" and became_past_due:
        if directory.subscription_status(obj["id"]) not in (None, SubscriptionStatus.PAST_DUE):
            return "subscription is no longer past_due"
        invoice = directory.invoice(_id(obj.get("latest_invoice")) or "") or {}
        amount, currency = _money(invoice.get("amount_due"), invoice.get("currency") or obj.get("currency"))
        return PAST_DUE, _id(obj.get("customer")), {
            "amount": amount, "currency": currency, "invoice_url": invoice.get("hosted_invoice_url") or ""}
    return None


def notices_for(events: Iterable[Mapping[str, Any]], directory: Directory,
                skipped: list[Skipped] | None = None) -> list[EmailRequest]:
    """The email requests these Stripe events call for (at most one per event), validated against
    the catalogue. Events that are not triggers are ignored; triggers that cannot be mailed (no
    billing contact, state moved on, a field missing) are appended to `skipped` with the reason."""
    out: list[EmailRequest] = []
    seen: set[str] = set()
    for event in events:
        event_id = event.get("id") or ""
        try:
            found = _kind_and_context(event, directory)
        except (KeyError, TypeError, ValueError) as exc:
            if skipped is not None:
                skipped.append(Skipped(event_id, "", f"{event.get('type')}: unreadable payload ({exc!r})"))
            continue
        if found is None:
            continue
        if isinstance(found, str):
            if skipped is not None:
                skipped.append(Skipped(event_id, "", found))
            continue
        kind, customer_id, context = found
        request_id = request_id_for(event_id, kind)
        if request_id in seen:
            continue
        contact = directory.contact_for_customer(customer_id) if customer_id else None
        if contact is None:
            if skipped is not None:
                skipped.append(Skipped(event_id, kind, f"no billing contact for customer {customer_id}"))
            continue
        context = {"username": contact.username, "organization_name": contact.organization_name, **context}
        try:
            out.append(build_request(kind, [{"email": contact.email, "verified": contact.verified,
                                             "username": contact.username}],
                                     context, request_id=request_id))
        except BadRequest as exc:
            if skipped is not None:
                skipped.append(Skipped(event_id, kind, exc.reason))
            continue
        seen.add(request_id)
    return out


# --- organisations without a subscription -------------------------------------------------------

GRACE_DAYS = 30


@dataclass(frozen=True)
class OrgWithoutSubscription:
    organization_id: str
    organization_name: str
    email: str
    username: str
    verified: bool = True


def subscription_required_notices(orgs: Iterable[OrgWithoutSubscription], today: date) -> list[EmailRequest]:
    """`organization-subscription-required` for each company organisation past its grace period
    with no active subscription (the query in notices.py selects them). The request id is per
    organisation and day, so a re-run the same day dispatches nothing new; the kind's 30-day
    repeat window (catalogue) keeps the email itself to once a month."""
    out = []
    for org in orgs:
        out.append(build_request(
            SUBSCRIPTION_REQUIRED, [{"email": org.email, "verified": org.verified, "username": org.username}],
            {"organization_name": org.organization_name, "username": org.username},
            request_id=f"org-subscription-required:{org.organization_id}:{today.isoformat()}"))
    return out
