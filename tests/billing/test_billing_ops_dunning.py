"""The dunning path end to end on the local stack: the local Stripe's clock moves past a renewal,
the card is declined, the event travels SQS -> Stripe ingestion (+ notices) -> email-requests ->
send job -> SMTP sink: `payment-failed` arrives once; the event delivered again sends nothing;
the retry succeeds -> `payment-succeeded`."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from pipelines.billing import customers, payments, products, subscriptions
from pipelines.billing.consumer import StripeEventConsumer
from pipelines.billing.envelope import EnvelopeSettings
from pipelines.billing.ingest import IngestSettings
from pipelines.billing.retrieve import StripeRetriever
from pipelines.common.consumer import run_consumer
from pipelines.common.drain import DrainOptions
from pipelines.schema import database
from pipelines.store.store import Store
from resources.aws import SQSQueueResource

pytestmark = pytest.mark.integration

BILLING_EMAIL = "billing+dunning@acme.example"


def _ingest(env, res) -> dict:
    """One drain of stripe-events through the ingestion with notices (what the drain job runs)."""
    settings = IngestSettings(EnvelopeSettings.from_strings(env["STRIPE_EVENTBRIDGE_SOURCES"],
                                                            env["STRIPE_WEBHOOK_SECRET"]))
    consumer = StripeEventConsumer(settings, StripeRetriever(res.client()),
                                   notices=SQSQueueResource(queue_name="email-requests", region_name="us-east-1"))
    with Store(database(env["DUCKDB_PATH"]).connect) as store:
        report = run_consumer(SQSQueueResource(queue_name="stripe-events", region_name="us-east-1"), consumer, store,
                              DrainOptions(max_seconds=30, wait_seconds=1, batch_size=100))
    return dict(report.counters) if hasattr(report, "counters") else dict(report.as_metadata())


def _send_email(instance) -> None:
    from pipelines.definitions import defs

    result = defs.resolve_job_def("send_email_batch_job").execute_in_process(instance=instance)
    assert result.success


def _peek(local_stack, queue: str) -> list[str]:
    """The bodies waiting on a queue, left there (made visible again at once)."""
    sqs, url = local_stack.client("sqs"), local_stack.queue_urls[queue]
    seen: list[dict] = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                   VisibilityTimeout=30).get("Messages", [])
        if not msgs:
            break
        seen += msgs
    for m in seen:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    return [m["Body"] for m in seen]


def _mail(local_stack, kind_subject: str) -> list:
    return [m for m in local_stack.smtp.to(BILLING_EMAIL) if kind_subject in str(m.message()["Subject"])]


def test_payment_failed_once_then_payment_succeeded(local_stack, stack_env, res):
    local_stack.stripe_control("delivery", mode="eventbridge")   # the redelivery below sends bare bodies
    client = res.client()
    instance = dg.DagsterInstance.ephemeral()
    with database(stack_env["DUCKDB_PATH"]).connect() as conn:
        conn.execute("INSERT INTO organizations VALUES ('org-acme', 'acme', 'company', now() - INTERVAL 60 DAY,"
                     " NULL, ?)", [BILLING_EMAIL])
        conn.execute("INSERT INTO organization_members VALUES ('org-acme', 'alice', 'Owner', NULL)")

    product = products.create_or_update_product(client, name="Organization seats")
    price = products.create_or_update_price(client, product_id=product["id"], unit_amount=700, currency="usd").price
    cus = customers.create_customer(client, organization_id="org-acme", name="acme", email=BILLING_EMAIL)
    card = payments.attach_payment_method(client, "pm_card_visa", cus["id"])
    payments.set_default_payment_method(client, cus["id"], card["id"])
    sub = subscriptions.create_subscription(client, customer_id=cus["id"], price_id=price["id"],
                                            organization_id="org-acme", quantity=3)
    local_stack.stripe_control("flush")
    _ingest(stack_env, res)

    # the card starts failing; a month later the renewal is declined
    local_stack.stripe_control(f"payment_methods/{card['id']}/fail")
    local_stack.stripe_control("advance", seconds=31 * 86400)
    local_stack.stripe_control("flush")
    failed_bodies = [b for b in _peek(local_stack, "stripe-events") if "invoice.payment_failed" in b]
    assert failed_bodies, "the local Stripe delivered no invoice.payment_failed"
    _ingest(stack_env, res)
    _send_email(instance)
    [mail] = _mail(local_stack, "Payment failed for acme")
    text = mail.message().get_body(("plain",)).get_content()
    assert "21.00 USD" in text and "https://" in text           # 3 seats at 7.00, and the invoice link
    assert len(_mail(local_stack, "Subscription for acme is past due")) == 1
    with database(stack_env["DUCKDB_PATH"]).connect() as conn:
        assert conn.execute("SELECT status FROM stripe_subscriptions WHERE subscription_id = ?",
                            [sub["id"]]).fetchone() == ("past_due",)
        kinds = [r[0] for r in conn.execute("SELECT kind FROM billing_notices ORDER BY kind").fetchall()]
    assert "payment-failed" in kinds

    # the same event delivered again (a redelivery / replay): nothing more is sent
    SQSQueueResource(queue_name="stripe-events", region_name="us-east-1").send(failed_bodies)
    counts = _ingest(stack_env, res)
    _send_email(instance)
    assert len(_mail(local_stack, "Payment failed for acme")) == 1
    assert len(_mail(local_stack, "is past due")) == 1
    assert not counts.get("notices_dispatched") and counts.get("notices_already_sent")

    # the card works again; Stripe's retry (3 days later) collects the invoice
    local_stack.stripe_control(f"payment_methods/{card['id']}/succeed")
    local_stack.stripe_control("advance", seconds=3 * 86400 + 60)
    local_stack.stripe_control("flush")
    _ingest(stack_env, res)
    _send_email(instance)
    subjects = [str(m.message()["Subject"]) for m in local_stack.smtp.to(BILLING_EMAIL)]
    others = [m for m in local_stack.smtp.to(BILLING_EMAIL) if "Payment failed" not in str(m.message()["Subject"])
              and "past due" not in str(m.message()["Subject"])]
    assert len(others) == 1, subjects
    [ok] = others
    assert "acme" in str(ok.message()["Subject"])
    assert "21.00 USD" in ok.message().get_body(("plain",)).get_content()
    assert len(_mail(local_stack, "Payment failed for acme")) == 1
    with database(stack_env["DUCKDB_PATH"]).connect() as conn:
        assert conn.execute("SELECT status FROM stripe_subscriptions WHERE subscription_id = ?",
                            [sub["id"]]).fetchone() == ("active",)
        sent = conn.execute("SELECT kind, status FROM email_messages WHERE to_address = ? ORDER BY kind",
                            [BILLING_EMAIL]).fetchall()
    assert ("payment-failed", "sent") in sent and ("payment-succeeded", "sent") in sent
    assert json.dumps(sent).count("payment-failed") == 1
