"""Billing's object types end to end on the local Stripe over HTTP and the real queue: what the
stripe-events ingestion writes is what reconciliation expects (both run the same projector), so a
reconcile after a complete ingestion finds nothing to repair."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import stripe

from pipelines.billing.consumer import StripeEventConsumer
from pipelines.billing.jobs import ingest_settings
from pipelines.billing.reconcile import Reconciler
from pipelines.billing.reconcile_tables import BillingTables
from pipelines.billing.retrieve import StripeRetriever
from pipelines.common.consumer import run_consumer
from pipelines.common.drain import DrainOptions
from pipelines.schema import database
from pipelines.store.store import Store
from resources.aws import SQSQueueResource
from resources.stripe_client import StripeResource

pytestmark = pytest.mark.integration

QUEUE = "stripe-events"
TENANT = {"billing_service": "pypi", "domain": "localhost"}
DAY = 86400


@pytest.fixture
def res(stack) -> StripeResource:
    env = stack.env
    return StripeResource(api_key=env["STRIPE_API_KEY"], webhook_secret=env["STRIPE_WEBHOOK_SECRET"],
                          api_base=stack.stripe_base, eventbridge_sources=env["STRIPE_EVENTBRIDGE_SOURCES"],
                          billing_service=TENANT["billing_service"], domain=TENANT["domain"],
                          rate_limit_per_second=10_000.0, retry_initial_delay=0.01, retry_max_delay=0.05)


def drain(stack, res: StripeResource, db_path: str) -> dict[str, int]:
    """Every event the local Stripe has sent so far, through the stripe-events consumer."""
    stack.stripe_control("flush", timeout=30)
    consumer = StripeEventConsumer(ingest_settings(res), StripeRetriever(res.client()))
    queue = SQSQueueResource(region_name="us-east-1", queue_name=QUEUE)
    with Store(lambda: database(db_path).connect()) as store:
        report = run_consumer(queue, consumer, store, DrainOptions(wait_seconds=1, empty_polls_to_stop=2))
    return dict(report.counters)


@contextmanager
def reconciler(res: StripeResource, db_path: str, run_id: str):
    with Store(lambda: database(db_path).connect()) as store:
        yield Reconciler(res.client(), store.transaction, BillingTables(), run_id=run_id)


def drift_rows(db_path: str, run_ids: list[str]) -> list[tuple]:
    with database(db_path).connect() as conn:
        return conn.execute("SELECT run_id, object_type, object_id, field, table_value, stripe_value, action "
                            "FROM billing_drift WHERE run_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY ALL",
                            [run_ids]).fetchall()


def customer_with_card(client: stripe.StripeClient, name: str) -> str:
    cus = client.v1.customers.create(params={"name": name, "email": f"billing@{name}.example",
                                             "metadata": {**TENANT, "organization_id": name}})
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": cus.id})
    client.v1.customers.update(cus.id, params={"invoice_settings": {"default_payment_method": pm.id}})
    return cus.id


def seat_prices(client: stripe.StripeClient) -> tuple[str, str]:
    product = client.v1.products.create(params={"name": "Organization seats", "metadata": TENANT})
    monthly = client.v1.prices.create(params={"product": product.id, "currency": "usd", "unit_amount": 700,
                                              "recurring": {"interval": "month"}})
    yearly = client.v1.prices.create(params={"product": product.id, "currency": "usd", "unit_amount": 7000,
                                             "recurring": {"interval": "year"}})
    return monthly.id, yearly.id


def test_items_ending_on_different_dates_are_not_drift(stack, res, tmp_path):
    """A monthly and a yearly item under flexible billing mode end a year apart. Ingestion and
    reconciliation must agree on the subscription's current_period_end: two full sweeps and an
    incremental run after a complete ingestion record no drift at all."""
    client = res.client()
    monthly, yearly = seat_prices(client)
    flexible = {"billing_mode": {"type": "flexible"}, "metadata": TENANT}
    both = client.v1.subscriptions.create(params={
        "customer": customer_with_card(client, "org-both"), **flexible,
        "items": [{"price": monthly, "quantity": 3}, {"price": yearly, "quantity": 1}]})
    added = client.v1.subscriptions.create(params={
        "customer": customer_with_card(client, "org-added"), **flexible, "items": [{"price": monthly}]})
    item = client.v1.subscription_items.create(params={"subscription": added.id, "price": yearly, "quantity": 2})
    assert item.subscription == added.id and item.price.id == yearly
    subs = [client.v1.subscriptions.retrieve(s) for s in (both.id, added.id)]
    for sub in subs:
        ends = sorted(i.current_period_end for i in sub["items"].data)
        assert len(ends) == 2 and ends[1] - ends[0] > 300 * DAY   # a month and a year from now
        assert sub.status == "active"

    db_path = str(tmp_path / "billing.duckdb")
    counters = drain(stack, res, db_path)
    assert counters.get("quarantined", 0) == 0, counters
    with database(db_path).connect() as conn:
        stored = dict(conn.execute("SELECT subscription_id, epoch(current_period_end)::BIGINT "
                                   "FROM stripe_subscriptions").fetchall())
        items = conn.execute("SELECT subscription_id, count(*), count(DISTINCT current_period_end) "
                             "FROM stripe_subscription_items GROUP BY 1 ORDER BY 1").fetchall()
    # current_period_end is the next renewal: the earliest of the items' period ends
    assert stored == {s.id: min(i.current_period_end for i in s["items"].data) for s in subs}
    assert items == sorted((s.id, 2, 2) for s in subs)

    runs = ["full-1", "full-2", "incremental"]
    with reconciler(res, db_path, runs[0]) as rec:
        first = rec.full_sweep()
    with reconciler(res, db_path, runs[1]) as rec:
        second = rec.full_sweep()
    with reconciler(res, db_path, runs[2]) as rec:
        third = rec.incremental()
    assert drift_rows(db_path, runs) == []
    assert first.checked["subscription"] == second.checked["subscription"] == 2
    assert third.mode == "incremental" and third.fallback_reason is None
    assert sum(third.differences.values()) == 0


def test_mixed_intervals_need_flexible_billing_mode(stack, res):
    client = res.client()
    monthly, yearly = seat_prices(client)
    customer = customer_with_card(client, "org-classic")
    with pytest.raises(stripe.InvalidRequestError, match="same currency and interval"):
        client.v1.subscriptions.create(params={"customer": customer,
                                               "items": [{"price": monthly}, {"price": yearly}]})
    sub = client.v1.subscriptions.create(params={"customer": customer, "items": [{"price": monthly}]})
    with pytest.raises(stripe.InvalidRequestError, match="same currency and interval"):
        client.v1.subscription_items.create(params={"subscription": sub.id, "price": yearly})
    euros = client.v1.prices.create(params={"product": client.v1.prices.retrieve(monthly).product,
                                            "currency": "eur", "unit_amount": 600, "recurring": {"interval": "year"}})
    flexible = client.v1.subscriptions.create(params={"customer": customer, "billing_mode": {"type": "flexible"},
                                                      "items": [{"price": monthly}]})
    assert flexible.billing_mode.type == "flexible"
    with pytest.raises(stripe.InvalidRequestError, match="same currency"):
        client.v1.subscription_items.create(params={"subscription": flexible.id, "price": euros.id})


def test_credit_notes_end_to_end(stack, res, tmp_path):
    """Credit notes issued, updated and voided on the local Stripe reach stripe_credit_notes through
    the queue; reconciliation finds nothing to repair, then repairs a row changed behind its back
    and a row deleted; the retriever fetches one by the registry's path."""
    client = res.client()
    monthly, _ = seat_prices(client)
    customer = customer_with_card(client, "org-credit")
    sub = client.v1.subscriptions.create(params={"customer": customer, "items": [{"price": monthly, "quantity": 2}],
                                                 "metadata": TENANT})
    paid = client.v1.invoices.retrieve(sub.latest_invoice)
    assert paid.status == "paid" and paid.total == 1400
    manual = client.v1.invoices.create(params={"customer": customer, "currency": "usd"})
    client.v1.invoices.finalize_invoice(manual.id)

    post = client.v1.credit_notes.create(params={"invoice": paid.id, "amount": 700, "reason": "duplicate",
                                                 "metadata": {"ticket": "42"}})
    client.v1.credit_notes.update(post.id, params={"memo": "one seat billed twice"})
    voided = client.v1.credit_notes.create(params={"invoice": paid.id, "amount": 300})
    voided = client.v1.credit_notes.void_credit_note(voided.id)
    assert (post.type, post.status, voided.status) == ("post_payment", "issued", "void") and voided.voided_at
    with pytest.raises(stripe.InvalidRequestError, match="exceeds"):
        client.v1.credit_notes.create(params={"invoice": paid.id, "amount": 800})
    listed = {c.id for c in client.v1.credit_notes.list(params={"invoice": paid.id}).auto_paging_iter()}
    assert listed == {post.id, voided.id}

    db_path = str(tmp_path / "billing.duckdb")
    counters = drain(stack, res, db_path)
    assert counters.get("quarantined", 0) == 0, counters
    with database(db_path).connect() as conn:
        rows = conn.execute("SELECT credit_note_id, customer_id, invoice_id, status, type, amount, currency, reason, "
                            "memo, voided_at IS NOT NULL FROM stripe_credit_notes ORDER BY created, credit_note_id"
                            ).fetchall()
        events = dict(conn.execute("SELECT type, count(*) FROM stripe_events WHERE object_type = 'credit_note' "
                                   "GROUP BY 1").fetchall())
    assert sorted(rows) == sorted([
        (post.id, customer, paid.id, "issued", "post_payment", 700, "usd", "duplicate", "one seat billed twice", False),
        (voided.id, customer, paid.id, "void", "post_payment", 300, "usd", None, None, True)])
    assert events == {"credit_note.created": 2, "credit_note.updated": 1, "credit_note.voided": 1}

    with reconciler(res, db_path, "clean") as rec:
        clean = rec.full_sweep()
    assert clean.checked["credit_note"] == 2 and drift_rows(db_path, ["clean"]) == []

    with database(db_path).connect() as conn:
        conn.execute("UPDATE stripe_credit_notes SET status = 'issued' WHERE credit_note_id = ?", [voided.id])
        conn.execute("DELETE FROM stripe_credit_notes WHERE credit_note_id = ?", [post.id])
    with reconciler(res, db_path, "repair") as rec:
        rec.full_sweep()
    assert [(r[1], r[2], r[3], r[6]) for r in drift_rows(db_path, ["repair"])] == sorted([
        ("credit_note", voided.id, "status", "updated"), ("credit_note", post.id, "*", "inserted")])
    with reconciler(res, db_path, "again") as rec:
        rec.incremental()
    assert drift_rows(db_path, ["again"]) == []

    fetched = StripeRetriever(res.client())("credit_note", post.id)
    assert fetched["id"] == post.id and fetched["memo"] == "one seat billed twice"
    assert StripeRetriever(res.client())("credit_note", "cn_missing") is None


def test_under_flexible_billing_each_item_renews_at_its_own_end(stack, res, tmp_path):
    """A month on, the monthly item renews (its period moves, its invoice bills it alone) and the
    yearly one keeps its period; the tables follow, and reconciliation still finds nothing."""
    client = res.client()
    monthly, yearly = seat_prices(client)
    sub = client.v1.subscriptions.create(params={
        "customer": customer_with_card(client, "org-renews"), "billing_mode": {"type": "flexible"},
        "metadata": TENANT, "items": [{"price": monthly, "quantity": 3}, {"price": yearly, "quantity": 1}]})
    before = {i.price.id: (i.current_period_start, i.current_period_end) for i in sub["items"].data}
    db_path = str(tmp_path / "billing.duckdb")
    drain(stack, res, db_path)
    with reconciler(res, db_path, "before") as rec:
        rec.full_sweep()

    stack.stripe_control("advance", seconds=32 * DAY)
    after_sub = client.v1.subscriptions.retrieve(sub.id)
    after = {i.price.id: (i.current_period_start, i.current_period_end) for i in after_sub["items"].data}
    assert after[yearly] == before[yearly]
    assert after[monthly][0] == before[monthly][1] and after[monthly][1] > before[monthly][1] + 27 * DAY
    renewal = client.v1.invoices.retrieve(after_sub.latest_invoice)
    assert renewal.billing_reason == "subscription_cycle" and renewal.status == "paid"
    assert [line.pricing.price_details.price for line in renewal.lines.data] == [monthly]
    assert renewal.amount_paid == 3 * 700

    counters = drain(stack, res, db_path)
    assert counters.get("quarantined", 0) == 0, counters
    with database(db_path).connect() as conn:
        assert conn.execute("SELECT epoch(current_period_end)::BIGINT FROM stripe_subscriptions").fetchone()[0] == \
            min(after[monthly][1], after[yearly][1])
    with reconciler(res, db_path, "after-incremental") as rec:
        rec.incremental()
    with reconciler(res, db_path, "after-full") as rec:
        rec.full_sweep()
    assert drift_rows(db_path, ["after-incremental", "after-full"]) == []
