"""Billing against the local Stripe over HTTP and the real moto queue: the client's retries and
rate limit under injected faults, re-retrieves, a realistic history delivered shuffled with
duplicates and late events (the tables must equal Stripe's own state), and the Dagster path end
to end."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import pytest
import stripe

from pipelines.billing.consumer import StripeEventConsumer
from pipelines.billing.jobs import ingest_settings
from pipelines.billing.retrieve import StripeRetriever
from pipelines.common.consumer import run_consumer
from pipelines.common.drain import DrainOptions
from pipelines.schema import database
from pipelines.store.store import Store
from resources.aws import SQSQueueResource
from resources.stripe_client import StripeResource, idempotency_key

pytestmark = [pytest.mark.integration, pytest.mark.long]   # a realistic history of ~1,100 events

QUEUE = "stripe-events"
TENANT = {"billing_service": "pypi", "domain": "localhost"}


def resource(stack, **kw) -> StripeResource:
    env = stack.env
    return StripeResource(api_key=env["STRIPE_API_KEY"], webhook_secret=env["STRIPE_WEBHOOK_SECRET"],
                          api_base=stack.stripe_base, eventbridge_sources=env["STRIPE_EVENTBRIDGE_SOURCES"],
                          billing_service=TENANT["billing_service"], domain=TENANT["domain"],
                          retry_initial_delay=0.01, retry_max_delay=0.05, **kw)


def consumer_for(res: StripeResource) -> tuple[StripeEventConsumer, StripeRetriever]:
    retriever = StripeRetriever(res.client())
    return StripeEventConsumer(ingest_settings(res), retriever), retriever


# ---------------------------------------------------------------- the client

def test_retries_under_injected_429_and_5xx_create_each_object_once(stack):
    stack.stripe_control("faults", rate_429=0.3, rate_5xx=0.2, seed=3)
    res = resource(stack, max_network_retries=8, rate_limit_per_second=200)
    client = res.client()
    ids = {client.v1.customers.create(params={"email": f"o{i}@example.org", "metadata": TENANT},
                                      options={"idempotency_key": idempotency_key("create-customer", f"org-{i}")}).id
           for i in range(15)}
    stack.stripe_control("faults")
    listed = {c.id for c in client.v1.customers.list(params={"limit": 100}).auto_paging_iter()}
    assert listed == ids and len(ids) == 15
    assert res.http.retries["429"] + sum(n for k, n in res.http.retries.items() if k.startswith("5")) > 0
    assert res.api_calls()["POST /v1/customers"] == 15 + sum(res.http.retries.values())


def test_rate_limit_is_shared_by_every_call_of_the_resource(stack):
    res = resource(stack, rate_limit_per_second=5)
    client = res.client()
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: [client.v1.customers.list(params={"limit": 1}) for _ in range(5)])
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 15 calls from three threads through one bucket: a burst of 5, then 10 more at 5/s
    assert time.monotonic() - started >= 1.9
    assert res.http.limiter.waited_seconds >= 1.5
    assert res.api_calls() == {"GET /v1/customers": 15}


def test_an_authentication_error_does_not_carry_the_key(stack):
    key = "sk_live_51NotAllowedHereButSecret0000"
    res = StripeResource(api_key=key, webhook_secret="whsec_x", api_base=stack.stripe_base)
    with pytest.raises(stripe.AuthenticationError) as exc:
        res.client().v1.customers.list()
    assert key not in str(exc.value) and key not in repr(res) and key not in str(exc.value.http_body)


# ---------------------------------------------------------------- a realistic history

def _plan(client) -> Any:
    product = client.v1.products.create(params={"name": "Organization", "metadata": TENANT})
    return client.v1.prices.create(params={"product": product.id, "unit_amount": 700, "currency": "usd",
                                           "recurring": {"interval": "month"}, "metadata": TENANT})


def build_history(stack, client, orgs: int, rng: random.Random, collected: list[dict]) -> dict[str, Any]:
    """Signups through Checkout, quantity changes, renewals, failed and recovered payments,
    cancellations, refunds, disputes, a deleted customer; the deliveries are appended to
    `collected` as they happen (moto's receive slows with the queue's length, so it stays short).
    Returns what the test needs to know."""
    price = _plan(client)
    subs = []
    for i in range(orgs):
        collected.extend(_deliveries(stack))
        customer = client.v1.customers.create(params={"email": f"billing{i}@example.org", "name": f"Org {i}",
                                                      "metadata": TENANT})
        session = client.v1.checkout.sessions.create(params={
            "mode": "subscription", "customer": customer.id, "client_reference_id": f"org-{i}",
            "line_items": [{"price": price.id, "quantity": rng.randint(1, 9)}],
            "success_url": "https://example.org/ok", "metadata": TENANT})
        stack.stripe_control(f"checkout_sessions/{session.id}/complete", payment_method="pm_card_visa")
        sub = client.v1.subscriptions.list(params={"customer": customer.id, "limit": 1}).data[0]
        subs.append(sub)
    for sub in rng.sample(subs, orgs // 3):
        item = sub["items"].data[0]
        client.v1.subscription_items.update(item.id, params={"quantity": item.quantity + rng.randint(1, 3)})
    failing = rng.sample(subs, orgs // 4)
    for sub in failing:
        stack.stripe_control(f"payment_methods/{sub.default_payment_method}/fail")
    collected.extend(_deliveries(stack))
    stack.stripe_control("advance", seconds=31 * 86400)            # renewals; some fail
    collected.extend(_deliveries(stack))
    for sub in failing[: len(failing) // 2]:                        # recovered on the retry
        stack.stripe_control(f"payment_methods/{sub.default_payment_method}/succeed")
    stack.stripe_control("advance", seconds=4 * 86400)
    collected.extend(_deliveries(stack))
    for sub in rng.sample([s for s in subs if s not in failing], orgs // 8):
        client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    for sub in rng.sample([s for s in subs if s not in failing], orgs // 10):
        client.v1.subscriptions.cancel(sub.id)
    charges = [c for c in client.v1.charges.list(params={"limit": 100}).auto_paging_iter() if c.status == "succeeded"]
    for charge in rng.sample(charges, 4):
        client.v1.refunds.create(params={"charge": charge.id, "amount": charge.amount // 2})
    for charge in rng.sample(charges, 3):
        dispute = stack.stripe_control("disputes", charge=charge.id, reason="fraudulent")
        stack.stripe_control(f"disputes/{dispute['id']}/close", status=rng.choice(["won", "lost"]))
    collected.extend(_deliveries(stack))
    gone = subs[-1].customer
    client.v1.customers.delete(gone)
    stack.stripe_control("advance", seconds=30 * 86400)             # another cycle: cancellations take effect
    collected.extend(_deliveries(stack))
    return {"deleted_customer": gone}


def _deliveries(stack) -> list[dict]:
    stack.stripe_control("flush", timeout=30)
    sqs = stack.client("sqs")
    url = stack.queue_urls[QUEUE]
    out: list[dict] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                  MessageAttributeNames=["All"]).get("Messages", [])
        if not got:
            break
        out.extend(got)
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                                        for i, m in enumerate(got)])
    return out


def _send(stack, messages: list[dict]) -> None:
    sqs = stack.client("sqs")
    url = stack.queue_urls[QUEUE]
    for start in range(0, len(messages), 10):
        chunk = messages[start:start + 10]
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": m["Body"],
             **({"MessageAttributes": m["MessageAttributes"]} if m.get("MessageAttributes") else {})}
            for i, m in enumerate(chunk)])


def shuffled_delivery(messages: list[dict], rng: random.Random) -> list[list[dict]]:
    """Shuffled, 20% delivered twice, 5% held back an hour: a second wave after the rest."""
    stream = messages + [m for m in messages if rng.random() < 0.2]
    rng.shuffle(stream)
    late = [m for m in stream if rng.random() < 0.05]
    return [[m for m in stream if m not in late], late]


def ingest(stack, res: StripeResource, db_path: str, waves: list[list[dict]]) -> tuple[dict, StripeRetriever]:
    consumer, retriever = consumer_for(res)
    queue = SQSQueueResource(region_name="us-east-1", queue_name=QUEUE)
    totals: dict[str, int] = {}
    with Store(lambda: database(db_path).connect()) as store:
        for wave in waves:
            for start in range(0, len(wave), 100):  # moto's receive slows with the queue's length
                _send(stack, wave[start:start + 100])
                report = run_consumer(queue, consumer, store, DrainOptions(batch_size=100, wait_seconds=0,
                                                                           max_seconds=120))
                for k, v in report.counters.items():
                    totals[k] = totals.get(k, 0) + v
        report = run_consumer(queue, consumer, store, DrainOptions(wait_seconds=1, empty_polls_to_stop=2))
        for k, v in report.counters.items():
            totals[k] = totals.get(k, 0) + v
    return totals, retriever


def _ts(value: Any) -> int | None:
    return None if value is None else int(value.timestamp())


def _state(stack, name: str) -> dict[str, dict]:
    return {o["id"]: o for o in stack.stripe_control(f"state/{name}", method="GET")["data"]}


# table -> (object type, key column, {column: how to read it from Stripe's object})
def _period(o: dict, end: str) -> int | None:
    values = [i[end] for i in o["items"]["data"] if i.get(end) is not None]
    return min(values) if values else None


def _invoice_subscription(o: dict) -> str | None:
    details = (o.get("parent") or {}).get("subscription_details") or {}
    sub = details.get("subscription")
    return sub["id"] if isinstance(sub, dict) else sub


def _without_sequence(customer: dict) -> dict:
    # Stripe bumps next_invoice_sequence with each invoice and sends no customer.updated for it
    return {k: v for k, v in customer.items() if k != "next_invoice_sequence"}


def _ref(v: Any) -> Any:
    return v["id"] if isinstance(v, dict) else v


COMPARED: dict[str, tuple[str, str, dict[str, Any]]] = {
    "stripe_subscriptions": ("subscription", "subscription_id", {
        "customer_id": lambda o: _ref(o["customer"]), "status": lambda o: o["status"],
        "quantity": lambda o: sum(i["quantity"] for i in o["items"]["data"]),
        "cancel_at_period_end": lambda o: o["cancel_at_period_end"], "cancel_at": lambda o: o["cancel_at"],
        "canceled_at": lambda o: o["canceled_at"], "ended_at": lambda o: o["ended_at"],
        "current_period_start": lambda o: _period(o, "current_period_start"),
        "current_period_end": lambda o: _period(o, "current_period_end"),
        "latest_invoice": lambda o: _ref(o["latest_invoice"]),
        "default_payment_method": lambda o: _ref(o["default_payment_method"]), "created": lambda o: o["created"],
        "raw": lambda o: o}),
    "stripe_invoices": ("invoice", "invoice_id", {
        "customer_id": lambda o: _ref(o["customer"]), "subscription_id": _invoice_subscription,
        "status": lambda o: o["status"], "amount_due": lambda o: o["amount_due"],
        "amount_paid": lambda o: o["amount_paid"], "amount_remaining": lambda o: o["amount_remaining"],
        "attempt_count": lambda o: o["attempt_count"], "next_payment_attempt": lambda o: o["next_payment_attempt"],
        "paid_at": lambda o: o["status_transitions"]["paid_at"], "billing_reason": lambda o: o["billing_reason"],
        "raw": lambda o: o}),
    "stripe_customers": ("customer", "customer_id", {
        "billing_email": lambda o: o["email"], "name": lambda o: o["name"],
        "default_payment_method": lambda o: _ref(o["invoice_settings"]["default_payment_method"]),
        "raw": lambda o: _without_sequence(o)}),
    "stripe_payment_methods": ("payment_method", "payment_method_id", {
        "customer_id": lambda o: _ref(o["customer"]), "card_last4": lambda o: o["card"]["last4"]}),
    "stripe_products": ("product", "product_id", {"name": lambda o: o["name"], "active": lambda o: o["active"]}),
    "stripe_prices": ("price", "price_id", {"unit_amount": lambda o: o["unit_amount"], "active": lambda o: o["active"]}),
}
PAYMENTS = {  # stripe_payments rows by kind
    "payment_intent": {"amount": "amount", "status": "status"},
    "charge": {"amount": "amount", "status": "status", "amount_refunded": "amount_refunded",
               "failure_code": "failure_code"},
    "refund": {"amount": "amount", "status": "status"},
    "dispute": {"amount": "amount", "status": "status", "reason": "reason"},
}
TIME_COLUMNS = {"cancel_at", "canceled_at", "ended_at", "current_period_start", "current_period_end", "created",
                "next_payment_attempt", "paid_at"}


def assert_tables_equal_stripe(stack, conn) -> int:
    """Every compared column of every row equals Stripe's object; returns the fields compared."""
    compared = 0
    for table, (name, key, columns) in COMPARED.items():
        state = _state(stack, name)
        cols = list(columns)
        rows = {r[0]: dict(zip(cols, r[1:])) for r in conn.execute(
            f"SELECT {key}, {', '.join(cols)} FROM {table}" + (" WHERE NOT deleted" if table == "stripe_customers"
                                                                else "")).fetchall()}
        assert set(rows) == set(state), (table, set(rows) ^ set(state))
        for oid, obj in state.items():
            for col, read in columns.items():
                ours = rows[oid][col]
                ours = json.loads(ours) if col == "raw" else _ts(ours) if col in TIME_COLUMNS else ours
                if table == "stripe_customers" and col == "raw":
                    ours = _without_sequence(ours)
                assert ours == read(obj), (table, oid, col, ours, read(obj))
                compared += 1
    for kind, fields in PAYMENTS.items():
        state = _state(stack, kind)
        rows = {r[0]: r[1:] for r in conn.execute(
            f"SELECT payment_id, {', '.join(fields)} FROM stripe_payments WHERE kind = ?", [kind]).fetchall()}
        assert set(rows) == set(state), (kind, set(rows) ^ set(state))
        for oid, obj in state.items():
            assert list(rows[oid]) == [obj[f] for f in fields.values()], (kind, oid)
            compared += len(fields)
    return compared


def _snapshot(conn) -> dict[str, dict]:
    """Every table as {key: {column: value}}, without the columns that record when or how a row
    was written (those differ between deliveries by design)."""
    skip = {"updated_at", "received_at", "processed_at", "sqs_message_id", "retrieved_at", "re_retrieved", "error",
            "outcome", "event_created", "event_id"}
    out: dict[str, dict] = {}
    for table, key in (("stripe_customers", "customer_id"), ("stripe_subscriptions", "subscription_id"),
                       ("stripe_subscription_items", "item_id"), ("stripe_products", "product_id"),
                       ("stripe_prices", "price_id"), ("stripe_invoices", "invoice_id"),
                       ("stripe_payment_methods", "payment_method_id"), ("stripe_payments", "payment_id")):
        cols = [r[0] for r in conn.execute(f"DESCRIBE {table}").fetchall() if r[0] not in skip]
        rows = {}
        for values in conn.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall():
            row = dict(zip(cols, values))
            if table == "stripe_customers" and row["raw"]:
                row["raw"] = _without_sequence(json.loads(row["raw"]))
            rows[row[key]] = row
        out[table] = rows
    out["stripe_events"] = {r[0]: r[1] for r in conn.execute("SELECT event_id, type FROM stripe_events").fetchall()}
    return out


def _differences(a: dict[str, dict], b: dict[str, dict]) -> list[tuple]:
    diffs = []
    for table in a:
        for key in set(a[table]) | set(b[table]):
            ra, rb = a[table].get(key), b[table].get(key)
            if ra != rb:
                cols = [c for c in (ra or rb) if (ra or {}).get(c) != (rb or {}).get(c)] if ra and rb else ["(row)"]
                diffs.append((table, key, cols))
    return diffs


def test_realistic_history_shuffled_duplicated_and_late_equals_stripe(stack, tmp_path):
    rng = random.Random(20261201)
    res = resource(stack, rate_limit_per_second=500)
    messages: list[dict] = []
    facts = build_history(stack, res.client(), orgs=36, rng=rng, collected=messages)
    types = {json.loads(m["Body"])["detail-type"] for m in messages}
    assert len(messages) >= 1000, len(messages)
    assert {"checkout.session.completed", "customer.subscription.updated", "invoice.payment_failed", "invoice.paid",
            "charge.refunded", "charge.dispute.created", "charge.dispute.closed", "customer.deleted",
            "customer.subscription.deleted"} <= types, types

    snapshots = []
    for run, seed in enumerate((1, 2)):
        waves = shuffled_delivery(messages, random.Random(seed))
        assert waves[1], "some deliveries are late"
        totals, retriever = ingest(stack, res, str(tmp_path / f"run{run}.duckdb"), waves)
        assert totals.get("quarantined", 0) == 0 and totals.get("internal_errors", 0) == 0, totals
        assert totals["duplicates"] + totals["events_new"] == sum(len(w) for w in waves) - totals.get(
            "quarantined", 0), totals
        with database(str(tmp_path / f"run{run}.duckdb")).connect() as conn:
            assert conn.execute("SELECT count(*) FROM stripe_events").fetchone()[0] == len(messages)
            assert assert_tables_equal_stripe(stack, conn) > 2000
            deleted = conn.execute("SELECT deleted FROM stripe_customers WHERE customer_id = ?",
                                   [facts["deleted_customer"]]).fetchone()
            assert deleted == (True,)
            linked = conn.execute("SELECT count(*) FROM stripe_subscriptions WHERE organization_id LIKE 'org-%'"
                                  ).fetchone()[0]
            assert linked == 36
            snapshots.append(_snapshot(conn))
        assert sum(retriever.calls.values()) == totals["stripe_calls"]
    assert not _differences(*snapshots), _differences(*snapshots)[:10]


def test_a_late_subscription_update_is_settled_by_the_local_stripe(stack, tmp_path):
    res = resource(stack, rate_limit_per_second=500)
    client = res.client()
    price = _plan(client)
    customer = client.v1.customers.create(params={"email": "a@example.org", "metadata": TENANT,
                                                  "payment_method": "pm_card_visa",
                                                  "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    item = sub["items"].data[0]
    for quantity in (2, 3):
        stack.stripe_control("advance", seconds=60)
        client.v1.subscription_items.update(item.id, params={"quantity": quantity})
    messages = _deliveries(stack)
    updates = sorted((m for m in messages if json.loads(m["Body"])["detail-type"] == "customer.subscription.updated"),
                     key=lambda m: json.loads(m["Body"])["detail"]["created"])
    assert len(updates) >= 2
    others = [m for m in messages if m not in updates]
    newest, older = updates[-1], updates[-2]
    totals, retriever = ingest(stack, res, str(tmp_path / "late.duckdb"), [others + [newest], [older]])
    assert retriever.calls["subscription"] >= 1
    with database(str(tmp_path / "late.duckdb")).connect() as conn:
        assert conn.execute("SELECT quantity FROM stripe_subscriptions").fetchone()[0] == 3
        older_id = json.loads(older["Body"])["detail"]["id"]
        assert conn.execute("SELECT outcome, re_retrieved FROM stripe_events WHERE event_id = ?",
                            [older_id]).fetchone() == ("applied", True)
