"""Subscription Manager and Payment Processor against the local Stripe over HTTP.

Every create is keyed by its action: after an injected 429 or 500 the SDK retries and exactly
one object exists; a caller that retries the whole call gets the same object back.
"""

from __future__ import annotations

import pytest
import stripe

from pipelines.billing import customers, payments, products, subscriptions
from pipelines.billing.tenant import Tenant
from tests.billing.billing_ops_helpers import calls, clear_faults, inject

pytestmark = pytest.mark.integration

TENANT = Tenant(billing_service="pypi", domain="test.example")


def _state(local_stack, name: str) -> list[dict]:
    return local_stack.stripe_control(f"state/{name}", method="GET")["data"]


def _price(client) -> str:
    product = products.create_or_update_product(client, name="Organization seats", description="per seat")
    return products.create_or_update_price(client, product_id=product["id"], unit_amount=700, currency="usd").price["id"]


def _customer_with_card(client, org: str = "org-1", card: str = "pm_card_visa"):
    cus = customers.create_customer(client, organization_id=org, name=org, email=f"billing@{org}.example", tenant=TENANT)
    pm = payments.attach_payment_method(client, card, cus["id"])
    payments.set_default_payment_method(client, cus["id"], pm["id"])
    return cus, pm


@pytest.mark.parametrize("fault", ["429", "500"])
def test_create_customer_after_injected_fault_makes_exactly_one(local_stack, res, fault):
    client = res.client()
    inject(local_stack, fault, fail_first=2)
    cus = customers.create_customer(client, organization_id="org-1", name="Acme", description="acme corp",
                                    email="billing@acme.example", tenant=TENANT)
    clear_faults(local_stack)
    assert res.http.retries[fault] == 2
    # the caller retrying the whole call (its process died before it saw the answer) gets the same one
    again = customers.create_customer(client, organization_id="org-1", name="Acme", description="acme corp",
                                      email="billing@acme.example", tenant=TENANT)
    assert again["id"] == cus["id"]
    stored = _state(local_stack, "customer")
    assert [c["id"] for c in stored] == [cus["id"]]
    assert stored[0]["metadata"] == {"billing_service": "pypi", "domain": "test.example", "organization_id": "org-1"}


@pytest.mark.parametrize("fault", ["429", "500"])
def test_direct_subscription_after_injected_fault_makes_exactly_one(local_stack, res, fault):
    client = res.client()
    price = _price(client)
    cus, pm = _customer_with_card(client)
    inject(local_stack, fault)
    sub = subscriptions.create_subscription(client, customer_id=cus["id"], price_id=price, organization_id="org-1",
                                            quantity=3, tenant=TENANT)
    clear_faults(local_stack)
    assert res.http.retries[fault] >= 1
    assert sub["status"] == "active" and sub["default_payment_method"] == pm["id"]
    assert sub["items"]["data"][0]["quantity"] == 3 and sub["metadata"]["organization_id"] == "org-1"
    again = subscriptions.create_subscription(client, customer_id=cus["id"], price_id=price, organization_id="org-1",
                                              quantity=3, tenant=TENANT)
    assert again["id"] == sub["id"]
    assert [s["id"] for s in _state(local_stack, "subscription")] == [sub["id"]]


def test_subscribing_again_after_a_cancel_is_a_new_subscription(local_stack, res):
    client = res.client()
    price = _price(client)
    cus, _ = _customer_with_card(client)
    first = subscriptions.create_subscription(client, customer_id=cus["id"], price_id=price, organization_id="org-1")
    subscriptions.cancel(client, first["id"])
    second = subscriptions.create_subscription(client, customer_id=cus["id"], price_id=price, organization_id="org-1")
    assert second["id"] != first["id"] and second["status"] == "active"
    # ...and that second request is itself retry-safe
    third = subscriptions.create_subscription(client, customer_id=cus["id"], price_id=price, organization_id="org-1")
    assert third["id"] == second["id"]
    assert len(_state(local_stack, "subscription")) == 2


def test_subscription_without_payment_method_is_refused_before_any_write(local_stack, res):
    client = res.client()
    price = _price(client)
    cus = customers.create_customer(client, organization_id="org-2", name="NoCard", tenant=TENANT)
    with pytest.raises(subscriptions.SubscriptionError, match=f"customer {cus['id']} has no default payment method"):
        subscriptions.create_subscription(client, customer_id=cus["id"], price_id=price, organization_id="org-2")
    assert _state(local_stack, "subscription") == []


def test_checkout_session_in_subscription_mode(local_stack, res):
    client = res.client()
    price = _price(client)
    cus = customers.create_customer(client, organization_id="org-3", name="Checkout", tenant=TENANT)
    inject(local_stack, "500")
    session = subscriptions.create_checkout_session(
        client, customer_id=cus["id"], price_id=price, organization_id="org-3", quantity=4,
        success_url="https://example.test/ok", cancel_url="https://example.test/cancel", tenant=TENANT)
    clear_faults(local_stack)
    assert session["mode"] == "subscription" and session["url"]
    assert len(_state(local_stack, "checkout.session")) == 1
    done = local_stack.stripe_control(f"checkout_sessions/{session['id']}/complete", payment_method="pm_card_visa")
    sub = client.v1.subscriptions.retrieve(done["subscription"])
    assert sub["status"] == "active" and sub["metadata"]["organization_id"] == "org-3"
    assert sub["items"]["data"][0]["quantity"] == 4
    portal = subscriptions.create_portal_session(client, customer_id=cus["id"], return_url="https://example.test/b")
    assert portal["url"] and portal["customer"] == cus["id"]


def test_quantity_cancel_resume_pause(local_stack, res):
    client = res.client()
    price = _price(client)
    cus, _ = _customer_with_card(client)
    sub = subscriptions.create_subscription(client, customer_id=cus["id"], price_id=price, organization_id="org-1",
                                            quantity=2)
    change = subscriptions.change_quantity(client, sub["id"], 5)
    assert change.called and (change.before, change.after) == (2, 5)
    before = calls(res, "POST /v1/subscriptions/{id}")
    assert not subscriptions.change_quantity(client, sub["id"], 5).called
    assert calls(res, "POST /v1/subscriptions/{id}") == before      # already right: no update call
    # 5 -> 2 -> 5 within the key's lifetime is three real changes, not a replay
    subscriptions.change_quantity(client, sub["id"], 2)
    subscriptions.change_quantity(client, sub["id"], 5)
    assert client.v1.subscriptions.retrieve(sub["id"])["items"]["data"][0]["quantity"] == 5

    assert subscriptions.cancel(client, sub["id"], at_period_end=True)["cancel_at_period_end"] is True
    assert subscriptions.resume(client, sub["id"])["cancel_at_period_end"] is False
    assert subscriptions.cancel(client, sub["id"], at_period_end=True)["cancel_at_period_end"] is True
    assert subscriptions.resume(client, sub["id"])["cancel_at_period_end"] is False

    assert subscriptions.pause(client, sub["id"])["pause_collection"]["behavior"] == "void"
    assert subscriptions.unpause(client, sub["id"])["pause_collection"] is None

    assert subscriptions.cancel(client, sub["id"])["status"] == "canceled"
    with pytest.raises(subscriptions.SubscriptionError, match="already canceled"):
        subscriptions.resume(client, sub["id"])


def test_customer_update(local_stack, res):
    client = res.client()
    cus = customers.create_customer(client, organization_id="org-4", name="Old", tenant=TENANT)
    customers.update_customer(client, cus["id"], name="New", description="renamed", email="new@org4.example")
    customers.update_customer(client, cus["id"], name="Old")
    customers.update_customer(client, cus["id"], name="New")   # A -> B -> A -> B: each applied
    got = client.v1.customers.retrieve(cus["id"])
    assert (got["name"], got["description"], got["email"]) == ("New", "renamed", "new@org4.example")
    with pytest.raises(ValueError, match="at least one"):
        customers.update_customer(client, cus["id"])


def test_products_and_prices_with_warehouse_semantics(local_stack, res):
    client = res.client()
    first = products.create_or_update_product(client, name="Organization seats", description="v1")
    second = products.create_or_update_product(client, name="Organization seats", description="v2")
    assert second["id"] == first["id"] and second["description"] == "v2"
    assert len(_state(local_stack, "product")) == 1
    p700 = products.create_or_update_price(client, product_id=first["id"], unit_amount=700, currency="usd")
    same = products.create_or_update_price(client, product_id=first["id"], unit_amount=700, currency="USD")
    assert same.price["id"] == p700.price["id"] and not same.created and same.archived == []
    p900 = products.create_or_update_price(client, product_id=first["id"], unit_amount=900, currency="usd")
    assert p900.created and p900.archived == [p700.price["id"]]
    active = [p["id"] for p in _state(local_stack, "price") if p["active"]]
    assert active == [p900.price["id"]]


def test_payment_methods_and_charges(local_stack, res):
    client = res.client()
    cus, visa = _customer_with_card(client, "org-5")
    seti = payments.create_setup_intent(client, cus["id"])
    assert seti["client_secret"] and seti["customer"] == cus["id"]

    inject(local_stack, "429")
    ok = payments.charge(client, customer_id=cus["id"], amount=1234, currency="usd", reference="order-1")
    clear_faults(local_stack)
    assert ok.status == "succeeded" and ok.client_secret is None
    assert payments.charge(client, customer_id=cus["id"], amount=1234, currency="usd",
                           reference="order-1").payment_intent_id == ok.payment_intent_id
    assert len([p for p in _state(local_stack, "payment_intent") if p["amount"] == 1234]) == 1

    needs = payments.attach_payment_method(client, "pm_card_authenticationRequired", cus["id"])
    action = payments.charge(client, customer_id=cus["id"], amount=500, currency="usd", reference="order-2",
                             payment_method_id=needs["id"])
    assert action.needs_action and action.client_secret and action.client_secret.startswith(action.payment_intent_id)
    assert "client_secret" not in repr(action) and action.client_secret not in repr(action)

    declined = payments.attach_payment_method(client, "pm_card_chargeDeclined", cus["id"])
    failed = payments.charge(client, customer_id=cus["id"], amount=500, currency="usd", reference="order-3",
                             payment_method_id=declined["id"])
    assert failed.status == "failed" and failed.failure_code == "generic_decline"

    assert payments.detach_payment_method(client, declined["id"])["customer"] is None
    assert payments.detach_payment_method(client, declined["id"])["customer"] is None   # again: no error
    with pytest.raises(payments.PaymentError, match="amount must be positive"):
        payments.charge(client, customer_id=cus["id"], amount=0, currency="usd", reference="x")


def test_refunds_full_partial_and_disputes(local_stack, res):
    client = res.client()
    cus, _ = _customer_with_card(client, "org-6")
    paid = payments.charge(client, customer_id=cus["id"], amount=5000, currency="eur", reference="order-9")
    inject(local_stack, "500")
    part = payments.refund(client, paid.payment_intent_id, amount=1000, reason="requested_by_customer")
    clear_faults(local_stack)
    assert payments.refund(client, paid.payment_intent_id, amount=1000, reason="requested_by_customer")["id"] == part["id"]
    second = payments.refund(client, paid.payment_intent_id, amount=1000, reason="requested_by_customer",
                             scope="second-goodwill")
    assert second["id"] != part["id"]
    rest = payments.refund(client, paid.payment_intent_id)
    assert rest["amount"] == 3000
    assert sorted(r["amount"] for r in _state(local_stack, "refund")) == [1000, 1000, 3000]
    with pytest.raises(payments.PaymentError, match="reason"):
        payments.refund(client, paid.payment_intent_id, amount=1, reason="because")

    other = payments.charge(client, customer_id=cus["id"], amount=2500, currency="eur", reference="order-10")
    charge_id = client.v1.payment_intents.retrieve(other.payment_intent_id)["latest_charge"]
    dispute = local_stack.stripe_control("disputes", charge=charge_id, reason="fraudulent")
    row = payments.record_dispute(client, dispute["id"])
    assert row["kind"] == "dispute" and row["amount"] == 2500 and row["payment_intent_id"] == other.payment_intent_id
    assert row["charge_id"] == charge_id and row["reason"] == "fraudulent"


def test_pay_an_open_invoice_after_a_failed_renewal(local_stack, res):
    client = res.client()
    price = _price(client)
    cus, card = _customer_with_card(client, "org-7")
    sub = subscriptions.create_subscription(client, customer_id=cus["id"], price_id=price, organization_id="org-7")
    local_stack.stripe_control(f"payment_methods/{card['id']}/fail")
    local_stack.stripe_control("advance", seconds=32 * 86400)
    invoice_id = client.v1.subscriptions.retrieve(sub["id"])["latest_invoice"]
    invoice = client.v1.invoices.retrieve(invoice_id)
    assert invoice["status"] == "open"
    result = payments.pay_invoice(client, invoice_id)
    assert result.status == "failed" and result.invoice_id == invoice_id
    local_stack.stripe_control(f"payment_methods/{card['id']}/succeed")
    assert payments.pay_invoice(client, invoice_id).status == "succeeded"
    assert client.v1.invoices.retrieve(invoice_id)["status"] == "paid"
    assert payments.pay_invoice(client, invoice_id).status == "succeeded"   # already paid: no call to pay
    with pytest.raises(stripe.InvalidRequestError):
        payments.pay_invoice(client, "in_doesnotexist")
