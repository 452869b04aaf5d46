"""The local Stripe through the official SDK over HTTP, and its deliveries into the real moto queue."""

from __future__ import annotations

import json

import pytest
import stripe

pytestmark = pytest.mark.integration


@pytest.fixture
def client(local_stack, stack_env):
    local_stack.stripe_control("reset")
    local_stack.stripe_control("faults")
    local_stack.stripe_control("delivery", mode="eventbridge")
    local_stack.purge("stripe-events")
    return local_stack.stripe_client()


def _plan(client, amount=500, interval="month"):
    product = client.v1.products.create(params={"name": "Organization plan", "metadata": {"billing_service": "pypi"}})
    return client.v1.prices.create(params={"product": product.id, "unit_amount": amount, "currency": "usd",
                                           "recurring": {"interval": interval}})


def _customer(client, card="pm_card_visa", **params):
    customer = client.v1.customers.create(params={"email": "owner@example.com", **params})
    pm = client.v1.payment_methods.attach(card, params={"customer": customer.id})
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": pm.id}})
    return customer


def test_subscription_events_arrive_in_eventbridge_envelopes(client, local_stack):
    price = _plan(client)
    customer = _customer(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    assert sub.status == "active"
    local_stack.stripe_control("flush")
    events = client.v1.events.list(params={"limit": 100}).data
    messages = local_stack.receive("stripe-events", len(events), timeout=10)
    envelopes = [json.loads(m["Body"]) for m in messages]
    assert sorted(e["detail"]["id"] for e in envelopes) == sorted(e.id for e in events)
    source = local_stack.env["STRIPE_EVENTBRIDGE_SOURCES"]
    for envelope in envelopes:
        assert envelope["source"] == source
        assert envelope["detail-type"] == envelope["detail"]["type"]
        assert set(envelope) == {"version", "id", "detail-type", "source", "account", "time", "region",
                                 "resources", "detail"}
        assert envelope["detail"]["api_version"] == stripe._api_version._ApiVersion.CURRENT
    created = [e for e in envelopes if e["detail-type"] == "customer.subscription.created"]
    assert created and created[0]["detail"]["data"]["object"]["id"] == sub.id
