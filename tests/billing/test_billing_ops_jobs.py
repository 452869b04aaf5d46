"""Operator jobs from the launchpad: config is checked before any Stripe call, a mistaken id
fails naming it, and a good run acts once and records the result in the tables."""

from __future__ import annotations

import dagster as dg
import pytest

from pipelines.billing import customers, payments, products, subscriptions
from pipelines.billing.jobs import cancel_subscription_job, refund_payment_job, resync_customer_job, seat_sync_job
from tests.billing.billing_ops_helpers import calls, store_of

pytestmark = pytest.mark.integration


def _run(job, res, db, config: dict) -> dg.ExecuteInProcessResult:
    return job.execute_in_process(run_config={"ops": config}, resources={"stripe": res, "store": store_of(db)},
                                  raise_on_error=False)


def _failure(result: dg.ExecuteInProcessResult) -> str:
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return event.event_specific_data.error.message + " " + str(event.event_specific_data.user_failure_data
                                                                 and event.event_specific_data.user_failure_data.description)


def _paid_customer(client, org="org-ops"):
    product = products.create_or_update_product(client, name="Organization seats")
    price = products.create_or_update_price(client, product_id=product["id"], unit_amount=700, currency="usd").price
    cus = customers.create_customer(client, organization_id=org, name=org, email=f"billing@{org}.example")
    pm = payments.attach_payment_method(client, "pm_card_visa", cus["id"])
    payments.set_default_payment_method(client, cus["id"], pm["id"])
    sub = subscriptions.create_subscription(client, customer_id=cus["id"], price_id=price["id"], organization_id=org,
                                            quantity=2)
    return cus, sub


@pytest.mark.parametrize("job,config,message", [
    (refund_payment_job, {"refund_payment": {"config": {"payment_id": "sub_123"}}},
     "payment_id: 'sub_123' is not a Stripe payment id"),
    (refund_payment_job, {"refund_payment": {"config": {"payment_id": "pi_123", "amount": -5}}},
     "amount: must be a positive number"),
    (refund_payment_job, {"refund_payment": {"config": {"payment_id": "pi_123", "reason": "oops"}}},
     "reason: 'oops' is not duplicate"),
    (cancel_subscription_job, {"cancel_subscription": {"config": {"subscription_id": "cus_1"}}},
     "subscription_id: 'cus_1' is not a Stripe subscription id"),
    (resync_customer_job, {"resync_customer": {"config": {"customer_id": "org-1"}}},
     "customer_id: 'org-1' is not a Stripe customer id"),
])
def test_bad_config_fails_before_any_call(world, job, config, message):
    res, db = world
    result = _run(job, res, db, config)
    assert not result.success and message in _failure(result)
    assert calls(res) == 0


@pytest.mark.parametrize("job,config,name", [
    (refund_payment_job, {"refund_payment": {"config": {"payment_id": "pi_doesnotexist"}}}, "payment pi_doesnotexist"),
    (cancel_subscription_job, {"cancel_subscription": {"config": {"subscription_id": "sub_doesnotexist"}}},
     "subscription sub_doesnotexist"),
    (resync_customer_job, {"resync_customer": {"config": {"customer_id": "cus_doesnotexist"}}},
     "customer cus_doesnotexist"),
])
def test_unknown_id_fails_naming_it(world, job, config, name):
    res, db = world
    result = _run(job, res, db, config)
    assert not result.success
    text = _failure(result)
    assert name in text and "no such object in Stripe" in text and "sk_test" not in text


def test_refund_cancel_and_resync(world, local_stack):
    res, db = world
    client = res.client()
    cus, sub = _paid_customer(client)
    paid = payments.charge(client, customer_id=cus["id"], amount=4000, currency="usd", reference="setup-fee")

    result = _run(refund_payment_job, res, db, {"refund_payment": {"config": {"payment_id": paid.payment_intent_id,
                                                                                "amount": 1500}}})
    assert result.success
    [refund] = local_stack.stripe_control("state/refund", method="GET")["data"]
    assert refund["amount"] == 1500 and refund["payment_intent"] == paid.payment_intent_id
    with db.connect() as conn:
        assert conn.execute("SELECT amount, status FROM stripe_payments WHERE payment_id = ?",
                            [paid.payment_intent_id]).fetchone() == (4000, "succeeded")

    result = _run(cancel_subscription_job, res, db, {"cancel_subscription": {"config": {
        "subscription_id": sub["id"], "at_period_end": True}}})
    assert result.success
    with db.connect() as conn:
        assert conn.execute("SELECT status, cancel_at_period_end FROM stripe_subscriptions WHERE subscription_id = ?",
                            [sub["id"]]).fetchone() == ("active", True)
    result = _run(cancel_subscription_job, res, db, {"cancel_subscription": {"config": {"subscription_id": sub["id"]}}})
    assert result.success
    again = _run(cancel_subscription_job, res, db, {"cancel_subscription": {"config": {"subscription_id": sub["id"]}}})
    assert not again.success and f"subscription {sub['id']} is already canceled" in _failure(again)

    result = _run(resync_customer_job, res, db, {"resync_customer": {"config": {"customer_id": cus["id"]}}})
    assert result.success
    with db.connect() as conn:
        assert conn.execute("SELECT organization_id, billing_email FROM stripe_customers WHERE customer_id = ?",
                            [cus["id"]]).fetchone() == ("org-ops", "billing@org-ops.example")
        assert conn.execute("SELECT status FROM stripe_subscriptions WHERE subscription_id = ?",
                            [sub["id"]]).fetchone() == ("canceled",)
        assert conn.execute("SELECT count(*) FROM stripe_invoices WHERE customer_id = ?",
                            [cus["id"]]).fetchone()[0] >= 1


def test_seat_sync_job_reports_and_fails_on_an_isolated_failure(world):
    res, db = world
    client = res.client()
    cus, sub = _paid_customer(client, "org-seats")
    with db.connect() as conn:
        conn.execute("INSERT INTO organizations VALUES ('org-seats', 'seats', 'company', now(), NULL, NULL)")
        conn.executemany("INSERT INTO organization_members VALUES ('org-seats', ?, 'Member', NULL)",
                         [[f"u{i}"] for i in range(4)])
    assert _run(resync_customer_job, res, db, {"resync_customer": {"config": {"customer_id": cus["id"]}}}).success
    result = _run(seat_sync_job, res, db, {})
    assert result.success
    assert client.v1.subscriptions.retrieve(sub["id"])["items"]["data"][0]["quantity"] == 4
    with db.connect() as conn:
        assert conn.execute("SELECT quantity FROM stripe_subscriptions WHERE subscription_id = ?",
                            [sub["id"]]).fetchone() == (4,)
        conn.execute("UPDATE stripe_subscription_items SET item_id = 'si_stale', quantity = 1")
    failed = _run(seat_sync_job, res, db, {})
    assert not failed.success and "seat sync failed for 1 organisation(s): org-seats" in _failure(failed)
