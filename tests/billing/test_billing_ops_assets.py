"""The billing assets and their checks, and the scheduled jobs, run through Dagster on the local
stack: reconcile_billing_job fills the tables from the local Stripe, the assets materialize with
their figures, and each check passes or fails on what the tables hold."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from pipelines.billing import customers, payments, products, subscriptions
from pipelines.billing.assets import REPORT_ASSETS
from pipelines.billing.checks import REPORT_CHECKS
from pipelines.billing.definitions import defs as billing_defs
from pipelines.billing.jobs import organization_subscription_notice_job, reconcile_billing_job
from resources.aws import SQSQueueResource
from tests.billing.billing_ops_helpers import store_of

pytestmark = pytest.mark.integration


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def _materialize(res, db, **kw) -> dg.ExecuteInProcessResult:
    return dg.materialize([*REPORT_ASSETS, *REPORT_CHECKS], resources={"stripe": res, "store": store_of(db)}, **kw)


def test_reconcile_then_assets_and_checks(local_stack, stack_env, res, db):
    client = res.client()
    product = products.create_or_update_product(client, name="Organization seats")
    price = products.create_or_update_price(client, product_id=product["id"], unit_amount=700, currency="usd").price
    subs = {}
    for org, seats in (("org-paying", 3), ("org-community", 1)):
        cus = customers.create_customer(client, organization_id=org, name=org, email=f"billing@{org}.example")
        pm = payments.attach_payment_method(client, "pm_card_visa", cus["id"])
        payments.set_default_payment_method(client, cus["id"], pm["id"])
        subs[org] = subscriptions.create_subscription(client, customer_id=cus["id"], price_id=price["id"],
                                                      organization_id=org, quantity=seats)
    with db.connect() as conn:
        conn.execute("INSERT INTO organizations VALUES ('org-paying', 'paying', 'company', now() - INTERVAL '90 days',"
                     " NULL, 'billing@org-paying.example'), ('org-community', 'pyladies', 'community',"
                     " now() - INTERVAL '90 days', NULL, NULL), ('org-late', 'late co', 'company',"
                     " now() - INTERVAL '45 days', NULL, 'billing@late.example')")
        conn.execute("INSERT INTO organization_members VALUES ('org-late', 'lou', 'Owner', NULL)")

    run = reconcile_billing_job.execute_in_process(
        run_config={"ops": {"reconcile_billing": {"config": {"mode": "full"}}}},
        resources={"stripe": res, "store": store_of(db)})
    assert run.success
    [out] = [e for e in run.all_events if e.event_type_value == "STEP_OUTPUT"]
    md = out.event_specific_data.metadata
    assert md["mode"].value == "full" and md["differences"].value > 0 and md["unrepaired"].value == 0

    result = _materialize(res, db)
    assert result.success
    mats = {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert mats["subscriptions_current"]["organizations"].value == 3
    assert mats["billing_daily"]["mrr_usd"].value == 28.0          # (3 + 1) seats at 7.00
    assert mats["billing_daily"]["new_subscriptions"].value == 2
    assert mats["billing_leaks"]["leaks"].value == 2               # community org paying; late co unsubscribed
    checks = _checks(result)
    assert checks == {"live_subscriptions_have_customer_and_organisation": True,
                      "none_live_here_canceled_in_stripe": True, "drift_repaired": True,
                      "payment_failure_rate_under_threshold": True, "no_billing_leaks": False}

    # the community organisation's subscription is canceled in Stripe, but the tables still say active:
    subscriptions.cancel(client, subs["org-community"]["id"])
    with db.connect() as conn:
        conn.execute("UPDATE stripe_subscriptions SET customer_id = 'cus_missing' WHERE subscription_id = ?",
                     [subs["org-paying"]["id"]])
    assert not _checks(_materialize(res, db))["live_subscriptions_have_customer_and_organisation"]
    # the daily incremental run repairs what events touched (the cancel), not the untouched tampering...
    run = reconcile_billing_job.execute_in_process(resources={"stripe": res, "store": store_of(db)})
    assert run.success
    checks = _checks(_materialize(res, db))
    assert checks["none_live_here_canceled_in_stripe"] and checks["drift_repaired"]
    assert not checks["live_subscriptions_have_customer_and_organisation"]
    with db.connect() as conn:
        assert conn.execute("SELECT status FROM stripe_subscriptions WHERE subscription_id = ?",
                            [subs["org-community"]["id"]]).fetchone() == ("canceled",)
    # ...which the weekly full sweep finds
    run = reconcile_billing_job.execute_in_process(
        run_config={"ops": {"reconcile_billing": {"config": {"mode": "full"}}}}, resources={"stripe": res, "store": store_of(db)})
    assert run.success
    assert _checks(_materialize(res, db))["live_subscriptions_have_customer_and_organisation"]
    with store_of(db).reports(reads=[], tables=["billing_leaks"]) as conn:   # a report: in the asset store on PostgreSQL
        assert conn.execute("SELECT leak FROM billing_leaks ORDER BY 1").fetchall() == [
            ("company organisation past its grace period without an active subscription",)]

    # a strict failure-rate threshold fails the check once a payment is declined
    cus = client.v1.subscriptions.retrieve(subs["org-paying"]["id"])["customer"]
    bad = payments.attach_payment_method(client, "pm_card_chargeDeclined", cus)
    declined = payments.charge(client, customer_id=cus, amount=500, currency="usd", reference="x",
                               payment_method_id=bad["id"])
    assert declined.status == "failed"
    assert reconcile_billing_job.execute_in_process(resources={"stripe": res, "store": store_of(db)}).success
    strict = _materialize(res, db, run_config={"ops": {"billing_daily_payment_failure_rate_under_threshold": {
        "config": {"max_rate": 0.1}}}})
    assert _checks(strict)["payment_failure_rate_under_threshold"] is False

    # organisations past the grace period without a subscription get the notice, once a day
    queue = SQSQueueResource(queue_name="email-requests", region_name="us-east-1")
    for _ in range(2):
        assert organization_subscription_notice_job.execute_in_process(
            resources={"store": store_of(db), "email_requests_queue": queue}).success
    bodies = [json.loads(m["Body"]) for m in local_stack.receive("email-requests", 10, timeout=3)]
    assert [(b["kind"], b["recipients"][0]["email"]) for b in bodies] == [
        ("organization-subscription-required", "billing@late.example")]


def test_billing_definitions_load():
    from pipelines.resource_defs import build_resources

    repo = dg.Definitions.merge(billing_defs, dg.Definitions(resources=build_resources())).get_repository_def()
    assert {"refund_payment_job", "cancel_subscription_job", "resync_customer_job", "seat_sync_job",
            "reconcile_billing_job", "organization_subscription_notice_job"} <= {j.name for j in repo.get_all_jobs()}
    assert {s.name for s in repo.schedule_defs} == {
        "seat_sync_schedule", "reconcile_billing_schedule", "reconcile_billing_full_schedule",
        "organization_subscription_notice_schedule", "billing_reports_schedule"}
