"""Stripe event ingestion on a real DuckDB file: envelopes, ledger, watermark, projections."""

from __future__ import annotations

import json
import time

import duckdb
import pytest

from bench import stripe_samples as s
from pipelines.billing.consumer import StripeEventConsumer
from pipelines.billing.envelope import EnvelopeSettings, Refusal, StripeEvent, kept_body, open_message
from pipelines.billing.ingest import IngestSettings
from pipelines.common.consumer import process_batch, replay_quarantine
from pipelines.common.queue_message import QueueMessage
from pipelines.schema import ensure_schema
from pipelines.store.dialect import dialect_of
from pipelines.store.store import Store
from tests.paths import FIXTURES

SECRET = "whsec_test_secret"
ENVELOPE = EnvelopeSettings.from_strings(f"{s.SOURCE}, aws.partner/stripe.com/ed_other", SECRET, 300)
SETTINGS = IngestSettings(ENVELOPE, billing_service="pypi", domain="pypi.org")


class Stripe:
    """Stands in for the one re-retrieve call: the current object of each id, and a call log."""

    def __init__(self, objects: dict[str, dict] | None = None):
        self.objects = dict(objects or {})
        self.calls: list[tuple[str, str]] = []

    def __call__(self, object_type: str, object_id: str) -> dict | None:
        self.calls.append((object_type, object_id))
        return self.objects.get(object_id)


_n = 0


def msg(body: str, attributes: dict[str, str] | None = None) -> QueueMessage:
    global _n
    _n += 1
    return QueueMessage(f"m{_n}", f"rh{_n}", body, attributes=attributes or {})


def eb(evt: dict) -> QueueMessage:
    return msg(s.eventbridge_body(evt))


def run(conn, messages, retriever=None, settings=SETTINGS):
    consumer = StripeEventConsumer(settings, retriever)
    return process_batch(Store.over(conn), consumer, messages)


def one(conn, sql, *params):
    return conn.execute(sql, list(params)).fetchone()


T = s.T0
CUS = s.customer("cus_A", T, "billing@example.org", "org-1")


def sub(status, t, quantity=3, **kw):
    return s.subscription("sub_A", "cus_A", T, status, quantity, t, **kw)


# ---------------------------------------------------------------- envelopes

def test_eventbridge_from_an_allowed_source_is_opened():
    evt = s.event("customer.created", CUS, T)
    opened = open_message(s.eventbridge_body(evt), {}, ENVELOPE)
    assert isinstance(opened, StripeEvent)
    assert (opened.id, opened.type, opened.object_id, opened.delivery) == (evt["id"], "customer.created", "cus_A",
                                                                           "eventbridge")


def test_real_eventbridge_sample_is_opened():
    doc = json.loads((FIXTURES / "stripe/eventbridge_stripe_charge.succeeded.real.json")
                     .read_text())
    opened = open_message(json.dumps(doc), {}, EnvelopeSettings.from_strings(doc["source"], None))
    assert isinstance(opened, StripeEvent) and opened.object_type == "charge"


@pytest.mark.parametrize("mutate, reason", [
    (lambda d: d.update(source="aws.partner/stripe.com/ed_evil"), "is not in STRIPE_EVENTBRIDGE_SOURCES"),
    (lambda d: d.update({"detail-type": "customer.deleted"}), "differs from the event type"),
    (lambda d: d.pop("detail"), "lacks a detail object"),
    (lambda d: d["detail"].pop("id"), "event lacks id"),
    (lambda d: d["detail"].update(created="yesterday"), "event created is str, expected int"),
    (lambda d: d["detail"].update(created=True), "event created is bool"),
    (lambda d: d["detail"].update(created=2**62), "not a plausible time"),
    (lambda d: d["detail"].update(livemode="no"), "livemode is str"),
    (lambda d: d["detail"]["data"].pop("object"), "event lacks data.object"),
    (lambda d: d["detail"]["data"]["object"].pop("id"), "lacks a string id"),
    (lambda d: d["detail"].update(id="ch_123"), "does not start with evt_"),
    (lambda d: d.update(source=["x"]), "lacks a string source"),
])
def test_eventbridge_refusals_name_the_problem(mutate, reason):
    doc = json.loads(s.eventbridge_body(s.event("customer.created", CUS, T)))
    mutate(doc)
    opened = open_message(json.dumps(doc), {}, ENVELOPE)
    assert isinstance(opened, Refusal) and reason in opened.reason


@pytest.mark.parametrize("body, reason", [
    ("{not json", "malformed JSON"),
    ("[1, 2]", "a JSON list, expected an object"),
    ("x" * (256 * 1024 + 1), "over the 262144 limit"),
    ("[" * 5000 + "]" * 5000, "malformed JSON"),
    ('{"hello": "world"}', "neither an EventBridge envelope"),
    (json.dumps(s.event("customer.created", CUS, T)), "without a Stripe-Signature"),
])
def test_bodies_refused_with_a_reason(body, reason):
    opened = open_message(body, {}, ENVELOPE)
    assert isinstance(opened, Refusal) and reason in opened.reason


def test_signed_webhook_is_verified():
    body, attrs = s.webhook(s.event("customer.created", CUS, T), SECRET)
    opened = open_message(body, attrs, ENVELOPE)
    assert isinstance(opened, StripeEvent) and opened.delivery == "webhook"


def test_tampered_body_wrong_secret_and_expired_timestamp_are_refused():
    evt = s.event("customer.created", CUS, T)
    body, attrs = s.webhook(evt, SECRET)
    tampered = body.replace("billing@example.org", "attacker@example.org")
    assert "bad Stripe-Signature" in open_message(tampered, attrs, ENVELOPE).reason
    _, wrong = s.webhook(evt, "whsec_someone_else")
    refused = open_message(body, wrong, ENVELOPE)
    assert "bad Stripe-Signature" in refused.reason and SECRET not in refused.reason
    old_body, old = s.webhook(evt, SECRET, timestamp=int(time.time()) - 301)
    assert "stale Stripe-Signature" in open_message(old_body, old, ENVELOPE).reason
    assert "bad Stripe-Signature" in open_message(body, {"Stripe-Signature": "garbage"}, ENVELOPE).reason
    no_secret = EnvelopeSettings(frozenset(), None)
    assert "no webhook secret" in open_message(body, attrs, no_secret).reason


def test_real_signed_webhook_sample_verifies_without_age_limit():
    sample = json.loads((FIXTURES /
                         "stripe/stripe-webhook-signed_invoiceitem.created.async-stripe.json").read_text())
    settings = EnvelopeSettings(frozenset(), sample["secret"], tolerance_seconds=0)
    opened = open_message(sample["body"], {"Stripe-Signature": sample["header"]}, settings)
    assert isinstance(opened, StripeEvent) and opened.type == "invoiceitem.created"
    # with the default tolerance the 2018 signature is stale
    stale = open_message(sample["body"], {"Stripe-Signature": sample["header"]},
                         EnvelopeSettings(frozenset(), sample["secret"], 300))
    assert "stale" in stale.reason


def test_kept_body_round_trips_the_signature():
    body, attrs = s.webhook(s.event("customer.created", CUS, T), SECRET)
    opened = open_message(kept_body(body, attrs), {}, ENVELOPE)
    assert isinstance(opened, StripeEvent) and opened.delivery == "webhook"
    forged = json.dumps({"sqs_message_attributes": {"Stripe-Signature": "t=1,v1=00"}, "body": body})
    assert "bad Stripe-Signature" in open_message(forged, {}, ENVELOPE).reason


# ---------------------------------------------------------------- ledger and tables

def test_subscription_lifecycle_projects_rows(conn):
    counters = run(conn, [eb(s.event("customer.created", CUS, T)),
                          eb(s.event("customer.subscription.created", sub("active", T + 1), T + 1))])
    assert counters["applied"] == 2 and counters["quarantined"] == 0
    assert one(conn, "SELECT status, quantity, organization_id, customer_id FROM stripe_subscriptions") == \
        ("active", 3, "org-1", "cus_A")
    assert one(conn, "SELECT organization_id, billing_email FROM stripe_customers") == ("org-1", "billing@example.org")
    assert one(conn, "SELECT price_id, product_id, quantity FROM stripe_subscription_items") == \
        ("price_seat", "prod_org", 3)
    assert one(conn, "SELECT unit_amount, recurring_interval FROM stripe_prices") == (500, "month")
    assert one(conn, "SELECT count(*), count(DISTINCT outcome) FROM stripe_events") == (2, 1)


def test_duplicates_are_no_ops(conn):
    evt = s.event("customer.subscription.created", sub("active", T + 1), T + 1)
    first = run(conn, [eb(evt), eb(evt)])
    assert first["applied"] == 1 and first["events_new"] == 1
    before = conn.execute("SELECT * FROM stripe_subscriptions").fetchall()
    again = run(conn, [eb(evt)])
    assert again["duplicates"] == 1 and again["events_new"] == 0
    assert conn.execute("SELECT * FROM stripe_subscriptions").fetchall() == before
    assert one(conn, "SELECT count(*) FROM stripe_events")[0] == 1


def test_an_older_update_does_not_overwrite_a_newer_one(conn):
    newer = s.event("customer.subscription.updated", sub("past_due", T + 1), T + 100)
    older = s.event("customer.subscription.updated", sub("active", T + 1), T + 50)
    stripe = Stripe({"sub_A": sub("past_due", T + 1)})
    run(conn, [eb(newer)], stripe)
    assert stripe.calls == []
    counters = run(conn, [eb(older)], stripe)
    # the late update is checked against Stripe: one call, and Stripe's state stays
    assert stripe.calls == [("subscription", "sub_A")]
    assert counters["stripe_calls"] == 1 and counters["re_retrieved"] == 1
    assert one(conn, "SELECT status FROM stripe_subscriptions")[0] == "past_due"
    assert one(conn, "SELECT event_id FROM stripe_object_watermarks WHERE object_id = 'sub_A'")[0] == newer["id"]
    assert one(conn, "SELECT outcome, re_retrieved FROM stripe_events WHERE event_id = ?", older["id"]) == \
        ("applied", True)


def test_an_older_update_without_a_client_is_stale(conn):
    newer = s.event("customer.subscription.updated", sub("past_due", T + 1), T + 100)
    older = s.event("customer.subscription.updated", sub("active", T + 1), T + 50)
    run(conn, [eb(newer)])
    run(conn, [eb(older)])
    assert one(conn, "SELECT status FROM stripe_subscriptions")[0] == "past_due"
    assert one(conn, "SELECT outcome FROM stripe_events WHERE event_id = ?", older["id"])[0] == "stale"


def test_within_a_batch_the_newest_wins_without_calls(conn):
    events = [s.event("customer.subscription.updated", sub(st, T + 1, quantity=q), T + dt)
              for st, q, dt in (("active", 5, 30), ("past_due", 5, 20), ("incomplete", 1, 10))]
    stripe = Stripe()
    counters = run(conn, [eb(e) for e in events], stripe)
    assert stripe.calls == [] and counters["applied"] == 1 and counters["stale"] == 2
    assert one(conn, "SELECT status, quantity FROM stripe_subscriptions") == ("active", 5)


def test_same_second_events_are_settled_by_stripe(conn):
    a = s.event("customer.subscription.updated", sub("active", T + 1, quantity=2), T + 10)
    b = s.event("customer.subscription.updated", sub("active", T + 1, quantity=7), T + 10)
    stripe = Stripe({"sub_A": sub("active", T + 1, quantity=7)})
    run(conn, [eb(a), eb(b)], stripe)
    assert stripe.calls == [("subscription", "sub_A")]
    assert one(conn, "SELECT quantity FROM stripe_subscriptions")[0] == 7


def test_a_late_non_update_event_is_stale_without_a_call(conn):
    paid = s.event("invoice.paid", s.invoice("in_1", "cus_A", "sub_A", T + 20, "paid", 500, 1, "x"), T + 20)
    finalized = s.event("invoice.finalized", s.invoice("in_1", "cus_A", "sub_A", T + 10, "open", 500, 0, "x"), T + 10)
    stripe = Stripe()
    run(conn, [eb(paid)], stripe)
    counters = run(conn, [eb(finalized)], stripe)
    assert stripe.calls == [] and counters["stale"] == 1
    assert one(conn, "SELECT status, subscription_id, paid_at IS NOT NULL FROM stripe_invoices") == \
        ("paid", "sub_A", True)


def test_foreign_api_version_is_re_retrieved_at_the_pinned_one(conn):
    evt = s.event("customer.subscription.updated", {**sub("active", T + 1), "status": "active"}, T + 10,
                  api_version="2020-08-27")
    stripe = Stripe({"sub_A": sub("trialing", T + 1)})
    counters = run(conn, [eb(evt)], stripe)
    assert counters["re_retrieved"] == 1
    assert one(conn, "SELECT status FROM stripe_subscriptions")[0] == "trialing"
    # without a client it cannot be trusted: quarantined, naming the version
    conn.execute("DELETE FROM stripe_events")
    counters = run(conn, [eb(evt)])
    reason = one(conn, "SELECT reason FROM quarantine")[0]
    assert counters["quarantined"] == 1 and "API version 2020-08-27" in reason


def test_tenant_filter_skips_only_another_named_tenant(conn):
    other = s.customer("cus_B", T, "b@example.org", "org-2")
    other["metadata"]["billing_service"] = "warehouse-staging"
    no_key = s.customer("cus_C", T, "c@example.org", "org-3")
    del no_key["metadata"]["billing_service"], no_key["metadata"]["domain"]
    wrong_domain = s.customer("cus_D", T, "d@example.org", "org-4")
    wrong_domain["metadata"]["domain"] = "test.pypi.org"
    counters = run(conn, [eb(s.event("customer.created", c, T)) for c in (other, no_key, wrong_domain, CUS)])
    assert counters["ignored-tenant"] == 2 and counters["applied"] == 2
    assert {r[0] for r in conn.execute("SELECT customer_id FROM stripe_customers").fetchall()} == {"cus_A", "cus_C"}
    assert one(conn, "SELECT count(*) FROM stripe_events WHERE outcome = 'ignored-tenant' AND error LIKE "
                     "'%warehouse-staging%'")[0] == 1


def test_unknown_type_is_recorded_not_failed(conn):
    evt = s.event("invoiceitem.created", {"id": "ii_1", "object": "invoiceitem"}, T)
    counters = run(conn, [eb(evt)])
    assert counters["unknown-type"] == 1 and counters["quarantined"] == 0
    assert one(conn, "SELECT outcome, object_type FROM stripe_events") == ("unknown-type", "invoiceitem")


@pytest.mark.parametrize("event_type, obj, reason", [
    ("customer.subscription.updated", {k: v for k, v in sub("active", T).items() if k != "status"},
     "subscription lacks status"),
    ("customer.subscription.updated", {**sub("active", T), "status": "zombie"}, "'zombie' is not one of"),
    ("customer.subscription.updated", {**sub("active", T), "items": {"data": "no"}}, "items is not a list"),
    ("invoice.paid", {**s.invoice("in_1", "cus_A", "sub_A", T, "paid", 5, 1, "x"), "amount_due": "5"},
     "invoice.amount_due is str"),
    ("charge.succeeded", {k: v for k, v in s.charge("ch_1", "pi_1", "cus_A", T, 5, "succeeded").items()
                          if k != "currency"}, "charge lacks currency"),
    ("customer.updated", {"id": "sub_x", "object": "subscription"}, "expected 'customer'"),
    ("charge.succeeded", {**s.charge("ch_1", "pi_1", "cus_A", T, 5, "succeeded"), "amount": 2**63},
     "does not fit 64 bits"),
    ("invoice.paid", {**s.invoice("in_1", "cus_A", "sub_A", T, "paid", 5, 1, "x"), "period_end": 2**40},
     "is not a plausible time"),
])
def test_an_object_lacking_a_needed_field_is_quarantined(conn, event_type, obj, reason):
    evt = s.event(event_type, obj, T)
    good = s.event("customer.created", CUS, T)
    counters = run(conn, [eb(evt), eb(good)])
    assert counters["quarantined"] == 1 and counters["applied"] == 1
    stored = one(conn, "SELECT reason FROM quarantine")[0]
    assert reason in stored and evt["id"] in stored
    assert one(conn, "SELECT outcome FROM stripe_events WHERE event_id = ?", evt["id"])[0] == "quarantined"


def test_customer_deleted_cascades_to_its_subscriptions(conn):
    run(conn, [eb(s.event("customer.created", CUS, T)),
               eb(s.event("customer.subscription.created", sub("active", T + 1), T + 1))])
    gone = {"id": "cus_A", "object": "customer", "deleted": True}
    run(conn, [eb(s.event("customer.deleted", {**CUS, **gone}, T + 50))])
    epoch = dialect_of(conn).epoch
    assert one(conn, f"SELECT deleted, {epoch('deleted_at')}, billing_email FROM stripe_customers") == \
        (True, T + 50, "billing@example.org")
    assert one(conn, f"SELECT status, {epoch('ended_at')} FROM stripe_subscriptions") == ("canceled", T + 50)


def test_checkout_links_the_organisation_and_fetches_a_missing_subscription(conn):
    session = {"id": "cs_test_1", "object": "checkout.session", "mode": "subscription", "status": "complete",
               "customer": "cus_Z", "subscription": "sub_Z", "client_reference_id": "org-9", "metadata": {},
               "customer_details": {"email": "pay@example.org"}}
    stripe = Stripe({"sub_Z": s.subscription("sub_Z", "cus_Z", T, "active", 4, T)})
    counters = run(conn, [eb(s.event("checkout.session.completed", session, T + 5))], stripe)
    assert stripe.calls == [("subscription", "sub_Z")] and counters["stripe_calls"] == 1
    assert one(conn, "SELECT status, organization_id, quantity FROM stripe_subscriptions") == ("active", "org-9", 4)
    assert one(conn, "SELECT organization_id, billing_email FROM stripe_customers") == ("org-9", "pay@example.org")
    # the customer's own event later fills its fields and keeps the link
    run(conn, [eb(s.event("customer.updated", s.customer("cus_Z", T, "real@example.org"), T + 6))], stripe)
    assert one(conn, "SELECT organization_id, billing_email FROM stripe_customers") == ("org-9", "real@example.org")


def test_checkout_in_order_makes_no_call(conn):
    stripe = Stripe()
    events = [e for e in s.history(3, renewals=0)]
    counters = run(conn, [eb(e) for e in events], stripe)
    assert stripe.calls == [] and counters["quarantined"] == 0
    last = {e["data"]["object"]["id"]: e["data"]["object"]["status"] for e in events
            if e["type"].startswith("customer.subscription.")}
    rows = conn.execute("SELECT subscription_id, organization_id, status FROM stripe_subscriptions "
                        "ORDER BY organization_id").fetchall()
    assert [(org, status) for _, org, status in rows] == [(f"org-{n}", last[sid]) for n, (sid, _, _) in
                                                           enumerate(rows)]
    assert [org for _, org, _ in rows] == ["org-0", "org-1", "org-2"]


def test_payments_one_row_per_money_movement(conn):
    pi = s.payment_intent("pi_1", "cus_A", T, 500, "requires_payment_method", "card_declined")
    ch = s.charge("ch_1", "pi_1", "cus_A", T, 500, "succeeded", refunded=200)
    ch["refunds"] = {"object": "list", "has_more": False, "data": [
        {"id": "re_1", "object": "refund", "amount": 200, "currency": "usd", "status": "succeeded",
         "reason": "requested_by_customer", "charge": "ch_1", "payment_intent": "pi_1", "created": T + 1}]}
    dp = {"id": "dp_1", "object": "dispute", "amount": 500, "currency": "usd", "status": "lost",
          "reason": "fraudulent", "charge": "ch_1", "payment_intent": "pi_1", "created": T + 2}
    run(conn, [eb(s.event("payment_intent.payment_failed", pi, T)), eb(s.event("charge.refunded", ch, T + 1)),
               eb(s.event("charge.dispute.closed", dp, T + 2))])
    rows = conn.execute("SELECT payment_id, kind, amount, status, failure_code, reason, charge_id "
                        "FROM stripe_payments ORDER BY payment_id").fetchall()
    assert rows == [("ch_1", "charge", 500, "succeeded", None, None, "ch_1"),
                    ("dp_1", "dispute", 500, "lost", None, "fraudulent", "ch_1"),
                    ("pi_1", "payment_intent", 500, "requires_payment_method", "card_declined", None, None),
                    ("re_1", "refund", 200, "succeeded", None, "requested_by_customer", "ch_1")]
    assert one(conn, "SELECT customer_id FROM stripe_payments WHERE payment_id = 're_1'")[0] == "cus_A"


def test_payment_methods_attach_detach_and_setup_intent(conn):
    pm = {"id": "pm_1", "object": "payment_method", "type": "card", "customer": "cus_A", "created": T,
          "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}}
    si = {"id": "seti_1", "object": "setup_intent", "payment_method": "pm_1", "customer": "cus_A",
          "status": "succeeded"}
    run(conn, [eb(s.event("payment_method.attached", pm, T)), eb(s.event("setup_intent.succeeded", si, T))])
    assert one(conn, "SELECT customer_id, card_last4, setup_intent_id FROM stripe_payment_methods") == \
        ("cus_A", "4242", "seti_1")
    run(conn, [eb(s.event("payment_method.detached", {**pm, "customer": None}, T + 5))])
    assert one(conn, "SELECT customer_id, card_brand FROM stripe_payment_methods") == (None, "visa")


def test_replay_verifies_a_webhook_again_after_the_secret_is_fixed(conn):
    evt = s.event("customer.created", CUS, T)
    body, attrs = s.webhook(evt, SECRET)
    misconfigured = IngestSettings(EnvelopeSettings(frozenset(), "whsec_wrong"), "pypi", "pypi.org")
    counters = run(conn, [msg(body, attrs)], settings=misconfigured)
    assert counters["quarantined"] == 1
    fixed = StripeEventConsumer(SETTINGS)
    replayed = replay_quarantine(Store.over(conn), fixed)
    assert replayed["still_failing"] == 0 and replayed["applied"] == 1
    assert one(conn, "SELECT delivery FROM stripe_events")[0] == "webhook"
    assert one(conn, "SELECT replay_result FROM quarantine")[0] == "ok"


def test_a_quarantined_event_delivered_again_is_tried_again(conn):
    evt = s.event("customer.subscription.updated", sub("active", T), T + 1, api_version="2019-01-01")
    run(conn, [eb(evt)])  # no client: quarantined
    counters = run(conn, [eb(evt)], Stripe({"sub_A": sub("active", T)}))
    assert counters["applied"] == 1 and counters["duplicates"] == 0
    assert one(conn, "SELECT outcome FROM stripe_events")[0] == "applied"


# object fixtures (not events) are delivered as the event that would carry them
FIXTURE_EVENT_TYPES = {"checkout.session": "checkout.session.completed", "subscription": "customer.subscription.updated",
                       "customer": "customer.updated", "deleted_customer": "customer.deleted", "invoice": "invoice.paid",
                       "payment_intent": "payment_intent.succeeded", "charge": "charge.succeeded",
                       "refund": "refund.created", "dispute": "charge.dispute.created"}


def _real_samples() -> list[tuple[str, str, dict[str, str], dict, IngestSettings]]:
    """(name, body, attributes, event, settings) for every file in tests/fixtures/stripe."""
    out = []
    for path in sorted((FIXTURES / "stripe").glob("*.json")):
        doc = json.loads(path.read_text())
        if "detail" in doc:
            out.append((path.name, json.dumps(doc), {}, doc["detail"],
                        IngestSettings(EnvelopeSettings.from_strings(doc["source"], None))))
        elif doc.get("object") == "event":
            out.append((path.name, s.eventbridge_body(doc), {}, doc, SETTINGS))
        elif "header" in doc and "secret" in doc:
            evt = json.loads(doc["body"])
            out.append((path.name, doc["body"], {"Stripe-Signature": doc["header"]}, evt,
                        IngestSettings(EnvelopeSettings(frozenset(), doc["secret"], tolerance_seconds=0))))
        elif set(doc) == {"object"}:  # only the data node of an event
            evt = s.event("checkout.session.completed", doc["object"], T, api_version="2022-11-15")
            out.append((path.name, s.eventbridge_body(evt), {}, evt, SETTINGS))
        else:
            for key, obj in doc.items():
                evt = obj if key == "event" else s.event(FIXTURE_EVENT_TYPES[key], obj, T, api_version="2024-06-20")
                out.append((f"{path.name}:{key}", s.eventbridge_body(evt), {}, evt, SETTINGS))
    return out


def test_every_real_sample_is_ingested_or_quarantined_with_a_reason(tmp_path):
    samples = _real_samples()
    assert len(samples) == 44  # 30 events, 1 EventBridge, 2 signed webhooks, 1 data node, 10 object fixtures
    outcomes = {}
    for n, (name, body, attrs, evt, settings) in enumerate(samples):
        for with_client in (True, False):
            c = duckdb.connect(":memory:")   # a fresh database per sample; a file adds only time
            ensure_schema(c)
            obj = evt["data"]["object"]
            stripe = Stripe({obj["id"]: obj}) if with_client else None
            counters = run(c, [msg(body, attrs)], stripe, settings=settings)
            outcome, error = c.execute("SELECT outcome, error FROM stripe_events").fetchone()
            if with_client:
                assert outcome in ("applied", "ignored-tenant", "unknown-type"), (name, outcome, error)
                outcomes[name] = outcome
            else:
                assert outcome in ("quarantined", "ignored-tenant", "unknown-type"), (name, outcome)
            if outcome == "quarantined":
                assert counters["quarantined"] == 1
                assert "API version" in c.execute("SELECT reason FROM quarantine").fetchone()[0]
            c.close()
    assert sum(o == "applied" for o in outcomes.values()) >= 38, outcomes
