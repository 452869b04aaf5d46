"""End to end on the local stack: a payer completes Checkout on the local Stripe -> its events in
EventBridge envelopes on the stripe-events queue (moto) -> stripe_events_sensor ->
ingest_stripe_events_job -> an active subscription in the ledgers, linked to its organisation. In both
store profiles (the DuckDB file; PostgreSQL)."""

from __future__ import annotations

import json
import time

import dagster as dg
import pytest

from resources.aws import SQSQueueResource
from tests.ledgers import rows, table
from tests.sensor_runs import tick_and_run

pytestmark = pytest.mark.integration

RUN_CONFIG = {"ops": {"drain_stripe_events": {"config": {"wait_seconds": 1, "max_seconds": 30}}}}
TENANT = {"billing_service": "pypi", "domain": "localhost"}


def doorbell_then_job(instance):
    return tick_and_run(instance, "stripe_events_sensor", "stripe_events_queue", "ingest_stripe_events_job", RUN_CONFIG)


def tables(env) -> dict[str, list]:
    return {t: table(env, t, exclude=["updated_at"])
            for t in ("stripe_customers", "stripe_subscriptions", "stripe_invoices", "stripe_payments")}


@pytest.mark.parametrize("delivery", ["eventbridge", "webhook"])
def test_checkout_to_active_subscription_end_to_end(local_stack, profile_env, delivery):
    """EventBridge is the production path; a webhook forwarded with its Stripe-Signature as an SQS
    message attribute is verified against STRIPE_WEBHOOK_SECRET."""
    local_stack.stripe_control("reset")
    local_stack.stripe_control("faults")
    local_stack.stripe_control("delivery", mode=delivery)
    local_stack.purge("stripe-events")
    env = profile_env
    client = local_stack.stripe_client()

    product = client.v1.products.create(params={"name": "Organization", "metadata": TENANT})
    price = client.v1.prices.create(params={"product": product.id, "unit_amount": 700, "currency": "usd",
                                            "recurring": {"interval": "month"}})
    customer = client.v1.customers.create(params={"email": "owner@example.org", "metadata": TENANT})
    session = client.v1.checkout.sessions.create(params={
        "mode": "subscription", "customer": customer.id, "client_reference_id": "org-e2e",
        "line_items": [{"price": price.id, "quantity": 4}], "success_url": "https://example.org/ok"})
    local_stack.stripe_control(f"checkout_sessions/{session.id}/complete", payment_method="pm_card_visa")
    local_stack.stripe_control("flush")
    events = client.v1.events.list(params={"limit": 100}).data
    assert "checkout.session.completed" in {e.type for e in events}
    # Poison on the same queue: quarantined by the same run, never blocking it.
    stranger = json.dumps({"source": "aws.partner/stripe.com/ed_someone_else", "detail-type": "customer.created",
                           "detail": json.loads(str(events[-1]))})
    queue = SQSQueueResource(queue_name="stripe-events", region_name="us-east-1")
    queue.send(["not json", stranger])
    if delivery == "webhook":  # a forged signature too
        local_stack.client("sqs").send_message(
            QueueUrl=local_stack.queue_urls["stripe-events"], MessageBody=str(events[0]),
            MessageAttributes={"Stripe-Signature": {"DataType": "String", "StringValue": "t=1,v1=00"}})

    instance = dg.DagsterInstance.ephemeral()
    deadline = time.monotonic() + 60
    runs = []
    row = None
    while time.monotonic() < deadline:
        result = doorbell_then_job(instance)
        if result is not None:
            runs.append(result)
        found = rows(env, "SELECT status, organization_id, quantity, customer_id FROM stripe_subscriptions "
                          "WHERE subscription_id = ?", [client.v1.checkout.sessions.retrieve(session.id).subscription])
        row = found[0] if found else None
        ledger = rows(env, "SELECT count(*) FROM stripe_events")[0][0]
        if row is not None and ledger == len(events):
            break
        time.sleep(0.5)
    assert runs
    assert row == ("active", "org-e2e", 4, customer.id)
    assert rows(env, "SELECT organization_id, billing_email FROM stripe_customers WHERE customer_id = ?",
                [customer.id]) == [("org-e2e", "owner@example.org")]
    assert rows(env, "SELECT count(*) FROM stripe_invoices WHERE status = 'paid'") == [(1,)]
    reasons = sorted(r[0] for r in rows(env, "SELECT reason FROM quarantine WHERE source = 'stripe-events'"))
    outcomes = dict(rows(env, "SELECT outcome, count(*) FROM stripe_events GROUP BY outcome"))
    deliveries = {r[0] for r in rows(env, "SELECT DISTINCT delivery FROM stripe_events")}
    assert deliveries == {delivery}
    assert len(reasons) == (3 if delivery == "webhook" else 2)
    assert reasons[0].startswith("EventBridge source 'aws.partner/stripe.com/ed_someone_else' is not in")
    if delivery == "webhook":
        assert reasons[1].startswith("bad Stripe-Signature: No signatures found matching")
    assert reasons[-1].startswith("malformed JSON")
    assert outcomes.get("quarantined", 0) == 0 and sum(outcomes.values()) == len(events)
    meta = runs[-1].output_for_node("drain_stripe_events")
    assert meta["stripe_subscriptions_rows"] == 1
    materialized = {e.event_specific_data.materialization.asset_key.to_user_string()
                    for r in runs for e in r.get_asset_materialization_events()}
    assert {"stripe_events", "stripe_subscriptions", "stripe_customers"} <= materialized

    # The queue is drained: the doorbell stays quiet, and a second drain changes nothing.
    before = tables(env)
    assert doorbell_then_job(instance) is None
    from pipelines.definitions import defs

    assert defs.resolve_job_def("ingest_stripe_events_job").execute_in_process(
        instance=instance, run_config=RUN_CONFIG).success
    assert tables(env) == before
