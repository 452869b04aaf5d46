"""Projection rules on a real DuckDB file: a wrong-typed Checkout reference is refused naming its
field path, a refund takes its charge's customer whatever the delivery order, and credit notes
land through the registry like every other type."""

from __future__ import annotations

import itertools

import pytest

from bench import stripe_samples as s
from pipelines.billing.consumer import StripeEventConsumer
from pipelines.billing.envelope import EnvelopeSettings
from pipelines.billing.ingest import IngestSettings
from pipelines.common.consumer import process_batch
from pipelines.common.queue_message import QueueMessage
from pipelines.store.dialect import dialect_of
from pipelines.store.store import Store

ENVELOPE = EnvelopeSettings.from_strings(s.SOURCE, None, 300)
SETTINGS = IngestSettings(ENVELOPE, billing_service="pypi", domain="pypi.org")
T = s.T0


class Stripe:
    """Stands in for the re-retrieve call: the current object of each id."""

    def __init__(self, objects: dict[str, dict]):
        self.objects = objects
        self.calls: list[tuple[str, str]] = []

    def __call__(self, object_type: str, object_id: str) -> dict | None:
        self.calls.append((object_type, object_id))
        return self.objects.get(object_id)


_n = itertools.count()


def run(conn, events: list[dict], retriever=None):
    messages = [QueueMessage(f"m{i}", f"rh{i}", s.eventbridge_body(e)) for e in events for i in [next(_n)]]
    return process_batch(Store.over(conn), StripeEventConsumer(SETTINGS, retriever), messages)


# ---------------------------------------------------------------- Checkout's reference

@pytest.mark.parametrize("where, value, named", [
    ("client_reference_id", {"org": "org-1"}, "checkout.session.client_reference_id is dict, expected str"),
    ("client_reference_id", ["org-1"], "checkout.session.client_reference_id is list, expected str"),
    ("metadata", {"organization_id": 7}, "checkout.session.metadata.organization_id is int, expected str"),
])
def test_a_wrong_typed_checkout_reference_is_refused_naming_its_field(conn, where, value, named):
    session = {"id": "cs_test_1", "object": "checkout.session", "mode": "payment", "status": "complete",
               "customer": "cus_Z", "metadata": {}, where: value}
    counters = run(conn, [s.event("checkout.session.completed", session, T)])
    assert counters["quarantined"] == 1
    reason = conn.execute("SELECT reason FROM quarantine").fetchone()[0]
    assert named in reason
    assert conn.execute("SELECT count(*) FROM stripe_customers").fetchone()[0] == 0


# ---------------------------------------------------------------- a refund's customer

CHARGE = s.charge("ch_1", "pi_1", "cus_A", T, 1000, "succeeded")


def refund(status: str = "succeeded", created: int = T + 10) -> dict:
    return {"id": "re_1", "object": "refund", "amount": 400, "currency": "usd", "status": status,
            "charge": "ch_1", "payment_intent": "pi_1", "reason": "requested_by_customer", "created": created,
            "metadata": {}}


def refund_row(conn) -> tuple:
    return conn.execute("SELECT customer_id, charge_id, status, amount FROM stripe_payments "
                        "WHERE payment_id = 're_1'").fetchone()


ORDERS = {
    "charge, then refund": [[s.event("charge.succeeded", CHARGE, T + 1)],
                            [s.event("refund.created", refund(), T + 10)]],
    "refund, then charge": [[s.event("refund.created", refund(), T + 10)],
                            [s.event("charge.succeeded", CHARGE, T + 1)]],
    "both in one batch": [[s.event("refund.created", refund(), T + 10), s.event("charge.succeeded", CHARGE, T + 1)]],
    "refund updated after": [[s.event("charge.succeeded", CHARGE, T + 1)],
                             [s.event("refund.created", refund("pending"), T + 10)],
                             [s.event("refund.updated", refund("succeeded"), T + 20)]],
    "charge refunded, refund late": [[s.event("charge.refunded", {**CHARGE, "amount_refunded": 400}, T + 11)],
                                     [s.event("refund.created", refund(), T + 10)]],
}


@pytest.mark.parametrize("order", list(ORDERS))
def test_a_refund_takes_its_charges_customer_in_any_delivery_order(conn, order):
    retrieved = {"re_1": refund(), "ch_1": CHARGE}
    for batch in ORDERS[order]:
        counters = run(conn, batch, Stripe(retrieved))
        assert counters["quarantined"] == 0, counters
    assert refund_row(conn) == ("cus_A", "ch_1", "succeeded", 400)


def test_a_refund_re_retrieved_keeps_its_charges_customer(conn):
    """Two events of the refund in one second: the refund is re-retrieved (it names no customer)."""
    stripe = Stripe({"re_1": refund()})
    run(conn, [s.event("charge.succeeded", CHARGE, T + 1)])
    run(conn, [s.event("refund.created", refund("pending"), T + 10),
               s.event("refund.updated", refund("succeeded"), T + 10)], stripe)
    assert stripe.calls == [("refund", "re_1")]
    assert refund_row(conn) == ("cus_A", "ch_1", "succeeded", 400)


# ---------------------------------------------------------------- credit notes

def credit_note(status: str, voided_at: int | None = None, memo: str | None = None) -> dict:
    return {"id": "cn_1", "object": "credit_note", "customer": "cus_A", "invoice": "in_1", "number": "ABC-0001-CN-01",
            "status": status, "type": "post_payment", "amount": 700, "currency": "usd", "reason": "duplicate",
            "memo": memo, "effective_at": T, "voided_at": voided_at, "livemode": False, "created": T,
            "metadata": {"ticket": "42"}}


def test_credit_note_events_are_projected_through_the_registry(conn):
    counters = run(conn, [s.event("credit_note.created", credit_note("issued"), T),
                          s.event("credit_note.updated", credit_note("issued", memo="duplicate seat"), T + 5)])
    assert counters["applied"] == 1 and counters["stale"] == 1
    run(conn, [s.event("credit_note.voided", credit_note("void", voided_at=T + 60, memo="duplicate seat"), T + 60)])
    assert conn.execute(
        "SELECT customer_id, invoice_id, status, type, amount, currency, reason, memo, "
        f"{dialect_of(conn).epoch('voided_at')}, metadata->>'ticket' FROM stripe_credit_notes").fetchall() == [
        ("cus_A", "in_1", "void", "post_payment", 700, "usd", "duplicate", "duplicate seat", T + 60, "42")]


def test_a_credit_note_without_an_amount_is_refused_naming_it(conn):
    bad = {k: v for k, v in credit_note("issued").items() if k != "amount"}
    counters = run(conn, [s.event("credit_note.created", bad, T)])
    assert counters["quarantined"] == 1
    assert "credit_note lacks amount" in conn.execute("SELECT reason FROM quarantine").fetchone()[0]
