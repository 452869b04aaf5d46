"""Dunning rules (pure): which event becomes which email, once, and only while it is still true.

The end-to-end path (local Stripe -> ingest -> dispatch -> SMTP sink) is in test_billing_ops_dunning.py.
"""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path

from pipelines.billing import dunning
from pipelines.billing.keys import action_key
from pipelines.email.catalogue import catalogue
from tests.paths import FIXTURES as SHARED_FIXTURES

FIXTURES = SHARED_FIXTURES / "billing"


def _event(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


class Tables:
    """The Directory over plain dicts: what the billing tables would say now."""

    def __init__(self, invoices=None, subscriptions=None, contacts=None):
        self.invoices = invoices or {}
        self.subscriptions = subscriptions or {}
        self.contacts = contacts or {}

    def contact_for_customer(self, customer_id):
        return self.contacts.get(customer_id)

    def invoice_status(self, invoice_id):
        return (self.invoices.get(invoice_id) or {}).get("status")

    def invoice(self, invoice_id):
        return self.invoices.get(invoice_id)

    def subscription_status(self, subscription_id):
        return self.subscriptions.get(subscription_id)

    def plan_name(self, subscription):
        return "Organization seats"


def _contact(customer_id):
    return {customer_id: dunning.Contact("org_1", "acme", "billing@acme.example", "alice")}


def test_payment_failed_once_per_event_with_the_invoice_figures():
    event = _event("stripe-event_invoice.payment_failed.stripe-ruby-mock.json")
    customer = event["data"]["object"]["customer"]
    tables = Tables(invoices={event["data"]["object"]["id"]: {"status": "open"}}, contacts=_contact(customer))
    requests = dunning.notices_for([event, copy.deepcopy(event)], tables)
    assert len(requests) == 1
    req = requests[0]
    assert req.kind == "payment-failed"
    assert req.request_id == f"stripe:{event['id']}:payment-failed"
    assert req.context["amount"] == "20.00" and req.context["currency"] == "usd"
    assert req.context["invoice_url"].startswith("https://invoice.stripe.com/")
    assert [r.email for r in req.recipients] == ["billing@acme.example"]
    # the same event again later builds the same request id: the email pipeline sends it once
    assert dunning.notices_for([event], tables)[0].request_id == req.request_id


def test_payment_failed_dropped_when_the_invoice_was_paid_since():
    event = _event("stripe-event_invoice.payment_failed.stripe-ruby-mock.json")
    customer = event["data"]["object"]["customer"]
    tables = Tables(invoices={event["data"]["object"]["id"]: {"status": "paid"}}, contacts=_contact(customer))
    skipped: list = []
    assert dunning.notices_for([event], tables, skipped) == []
    assert skipped and "no longer open" in skipped[0].reason


def test_paid_after_failure_only():
    event = _event("stripe-event_invoice.paid.stripe-sync-engine.json")
    tables = Tables(contacts=_contact(event["data"]["object"]["customer"]))
    assert dunning.notices_for([event], tables) == []          # first-attempt payment: no email
    retried = copy.deepcopy(event)
    retried["data"]["object"]["attempt_count"] = 2
    retried["data"]["object"]["amount_paid"] = 1500
    [req] = dunning.notices_for([retried], tables)
    assert req.kind == "payment-succeeded"
    assert req.context["amount"] == "15.00" and req.context["paid_date"] == "2022-01-20"


def test_past_due_only_on_the_transition_and_while_still_past_due():
    event = _event("stripe-event_customer.subscription.deleted.stripe-sync-engine.json")
    sub = event["data"]["object"]
    updated = copy.deepcopy(event)
    updated["type"] = "customer.subscription.updated"
    updated["data"]["object"]["status"] = "past_due"
    updated["data"]["object"]["latest_invoice"] = "in_1"
    updated["data"]["previous_attributes"] = {"status": "active"}
    invoices = {"in_1": {"status": "open", "amount_due": 900, "currency": "eur",
                         "hosted_invoice_url": "https://invoice.example/i/1"}}
    tables = Tables(invoices=invoices, subscriptions={sub["id"]: "past_due"}, contacts=_contact(sub["customer"]))
    [req] = dunning.notices_for([updated], tables)
    assert req.kind == "subscription-past-due" and req.context["amount"] == "9.00"
    # an update that does not change the status is not a trigger
    no_change = copy.deepcopy(updated)
    no_change["data"]["previous_attributes"] = {"quantity": 3}
    assert dunning.notices_for([no_change], tables) == []
    # delivered late, after the subscription recovered: dropped
    recovered = Tables(invoices=invoices, subscriptions={sub["id"]: "active"}, contacts=_contact(sub["customer"]))
    assert dunning.notices_for([updated], recovered) == []


def test_canceled_and_no_contact_is_reported_not_raised():
    event = _event("stripe-event_customer.subscription.deleted.stripe-sync-engine.json")
    [req] = dunning.notices_for([event], Tables(contacts=_contact(event["data"]["object"]["customer"])))
    assert req.kind == "subscription-canceled" and req.context["ends_at"] == "2021-06-08"
    skipped: list = []
    assert dunning.notices_for([event], Tables(), skipped) == []
    assert "no billing contact" in skipped[0].reason


def test_unreadable_event_is_skipped_with_a_reason():
    skipped: list = []
    bad = {"id": "evt_bad", "type": "invoice.payment_failed", "data": {"object": {"customer": "cus_1"}}}
    assert dunning.notices_for([bad], Tables(), skipped) == []
    assert skipped[0].event_id == "evt_bad" and "unreadable" in skipped[0].reason


def test_subscription_required_is_keyed_by_organisation_and_day():
    org = dunning.OrgWithoutSubscription("org_9", "globex", "owner@globex.example", "bob")
    [a] = dunning.subscription_required_notices([org], date(2026, 12, 1))
    [b] = dunning.subscription_required_notices([org], date(2026, 12, 1))
    [c] = dunning.subscription_required_notices([org], date(2026, 12, 2))
    assert a.request_id == b.request_id != c.request_id
    assert a.kind == "organization-subscription-required"
    assert catalogue()["organization-subscription-required"].repeat_window.days == 30


def test_idempotency_keys_follow_the_action():
    p = {"name": "acme"}
    assert action_key("customer.create", "org_1", params=p) == action_key("customer.create", "org_1", params=dict(p))
    assert action_key("customer.create", "org_1", params=p) != action_key("customer.create", "org_2", params=p)
    assert action_key("customer.create", "org_1", params=p) != action_key("customer.create", "org_1",
                                                                          params={"name": "other"})
    assert len(action_key("x", "y" * 400)) <= 255
