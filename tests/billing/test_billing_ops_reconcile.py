"""Reconciliation against the local Stripe: drift injected into the tables is repaired and
recorded, a gap of missed events is caught up through the Events API, and a run with nothing
changed makes exactly one API call."""

from __future__ import annotations

import random
from contextlib import contextmanager

import pytest

from pipelines.billing import customers, payments, products, reporting, subscriptions
from pipelines.billing.reconcile import Reconciler
from pipelines.billing.reconcile_tables import BillingTables
from pipelines.store.store import Store
from tests.billing.billing_ops_helpers import calls, clear_faults, inject

pytestmark = pytest.mark.integration


@contextmanager
def reconciler(res, db, run_id: str):
    with Store(db.connect) as store:
        yield Reconciler(res.client(), store.transaction, BillingTables(), run_id=run_id)


def _populate(client, n: int = 6) -> dict[str, list[str]]:
    product = products.create_or_update_product(client, name="Organization seats")
    price = products.create_or_update_price(client, product_id=product["id"], unit_amount=700, currency="usd").price
    ids: dict[str, list[str]] = {"customer": [], "subscription": [], "payment_intent": []}
    for i in range(n):
        org = f"org-{i}"
        cus = customers.create_customer(client, organization_id=org, name=org, email=f"billing@{org}.example")
        pm = payments.attach_payment_method(client, "pm_card_visa", cus["id"])
        payments.set_default_payment_method(client, cus["id"], pm["id"])
        sub = subscriptions.create_subscription(client, customer_id=cus["id"], price_id=price["id"],
                                                organization_id=org, quantity=i + 1)
        one_off = payments.charge(client, customer_id=cus["id"], amount=1000 + i, currency="usd", reference=f"fee-{i}")
        ids["customer"].append(cus["id"])
        ids["subscription"].append(sub["id"])
        ids["payment_intent"].append(one_off.payment_intent_id)
    return ids


def _drift(conn, run_id: str) -> set[tuple]:
    return set(conn.execute("SELECT object_type, object_id, field, action FROM billing_drift WHERE run_id = ?",
                            [run_id]).fetchall())


def test_full_sweep_repairs_random_drift_and_records_each(world, local_stack):
    res, db = world
    client = res.client()
    ids = _populate(client)
    with reconciler(res, db, "first") as rec:
        first = rec.full_sweep()
    assert first.differences["subscription"] == 6 and first.differences["customer"] == 6
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM stripe_subscriptions").fetchone()[0] == 6
        assert {r[0] for r in conn.execute("SELECT DISTINCT action FROM billing_drift WHERE run_id = 'first'")
                .fetchall()} == {"inserted"}
        invoices = [r[0] for r in conn.execute("SELECT invoice_id FROM stripe_invoices ORDER BY 1").fetchall()]
    assert len(invoices) >= 6

    rng = random.Random(13)
    sub_wrong, sub_missing, sub_qty = rng.sample(ids["subscription"], 3)
    cus_wrong, cus_missing = rng.sample(ids["customer"], 2)
    inv_wrong = rng.choice(invoices)
    pi_wrong = rng.choice(ids["payment_intent"])
    expected = {
        ("subscription", sub_wrong, "status", "updated"),
        ("subscription", sub_missing, "*", "inserted"),
        ("subscription", sub_qty, "quantity", "updated"),
        ("subscription", "sub_ghost", "*", "deleted"),
        ("customer", cus_wrong, "billing_email", "updated"),
        ("customer", cus_missing, "*", "inserted"),
        ("customer", "cus_ghost", "*", "deleted"),
        ("invoice", inv_wrong, "amount_paid", "updated"),
        ("invoice", "in_ghost", "*", "deleted"),
        ("payment_intent", pi_wrong, "status", "updated"),
        ("payment_intent", "pi_ghost", "*", "deleted"),
    }
    with db.connect() as conn:
        conn.execute("UPDATE stripe_subscriptions SET status = 'past_due' WHERE subscription_id = ?", [sub_wrong])
        conn.execute("DELETE FROM stripe_subscriptions WHERE subscription_id = ?", [sub_missing])
        conn.execute("UPDATE stripe_subscriptions SET quantity = 99 WHERE subscription_id = ?", [sub_qty])
        conn.execute("UPDATE stripe_customers SET billing_email = 'wrong@example.com' WHERE customer_id = ?", [cus_wrong])
        conn.execute("DELETE FROM stripe_customers WHERE customer_id = ?", [cus_missing])
        conn.execute("UPDATE stripe_invoices SET amount_paid = amount_paid + 1 WHERE invoice_id = ?", [inv_wrong])
        conn.execute("UPDATE stripe_payments SET status = 'processing' WHERE payment_id = ?", [pi_wrong])
        # rows for objects Stripe does not have (deleted there, or never were)
        conn.execute("INSERT INTO stripe_subscriptions (subscription_id, customer_id, organization_id, status, created,"
                     " updated_at) VALUES ('sub_ghost', 'cus_ghost', 'org-0', 'active', now() - INTERVAL '2 days', now())")
        conn.execute("INSERT INTO stripe_customers (customer_id, organization_id, created, updated_at)"
                     " VALUES ('cus_ghost', 'org-0', now() - INTERVAL '2 days', now())")
        conn.execute("INSERT INTO stripe_invoices (invoice_id, status, created, updated_at)"
                     " VALUES ('in_ghost', 'open', now() - INTERVAL '2 days', now())")
        conn.execute("INSERT INTO stripe_payments (payment_id, kind, status, created, updated_at)"
                     " VALUES ('pi_ghost', 'payment_intent', 'succeeded', now() - INTERVAL '2 days', now())")

    inject(local_stack, "429")          # the sweep rides over a rate limit answer
    with reconciler(res, db, "repair") as rec:
        report = rec.full_sweep()
    clear_faults(local_stack)
    assert res.http.retries["429"] >= 1
    assert report.unrepaired == []
    with db.connect() as conn:
        found = _drift(conn, "repair")
        assert found == expected
        row = conn.execute("SELECT table_value, stripe_value FROM billing_drift WHERE run_id = 'repair'"
                           " AND object_id = ? AND field = 'status'", [sub_wrong]).fetchone()
        assert row == ("past_due", "active")
        assert conn.execute("SELECT status, quantity FROM stripe_subscriptions WHERE subscription_id = ?",
                            [sub_qty]).fetchone()[1] == ids["subscription"].index(sub_qty) + 1
        assert conn.execute("SELECT count(*) FROM stripe_subscriptions WHERE subscription_id = 'sub_ghost'"
                            ).fetchone()[0] == 0
        assert conn.execute("SELECT deleted FROM stripe_customers WHERE customer_id = 'cus_ghost'").fetchone() == (True,)
        assert reporting.last_run_unrepaired(conn) == ("repair", 0)
    # and now they agree: a third sweep finds nothing
    with reconciler(res, db, "again") as rec:
        assert sum(rec.full_sweep().differences.values()) == 0


def test_incremental_catches_up_missed_events_and_costs_one_call_when_nothing_changed(world, local_stack):
    res, db = world
    client = res.client()
    ids = _populate(client, 4)
    with reconciler(res, db, "base") as rec:
        rec.full_sweep()

    # nothing happened since: exactly one API call (the Events API page)
    before = calls(res)
    with reconciler(res, db, "idle") as rec:
        idle = rec.incremental()
    assert calls(res) - before == 1 and idle.calls == {"event": 1} and sum(idle.differences.values()) == 0

    # a gap: these changes' events never reached the tables (no ingestion ran)
    subscriptions.change_quantity(client, ids["subscription"][0], 9)
    subscriptions.cancel(client, ids["subscription"][1])
    customers.update_customer(client, ids["customer"][2], email="new@org-2.example")
    late = customers.create_customer(client, organization_id="org-late", name="late")
    before = calls(res)
    with reconciler(res, db, "catch-up") as rec:
        report = rec.incremental()
    made = calls(res) - before
    assert report.fallback_reason is None
    touched = report.calls["subscription"] + report.calls["customer"] + report.calls["invoice"] \
        + report.calls["payment_intent"]
    assert made == report.calls["event"] + touched and report.calls["event"] == 1
    assert touched <= 6           # the two subscriptions, two customers, at most the proration invoices
    with db.connect() as conn:
        assert conn.execute("SELECT quantity FROM stripe_subscriptions WHERE subscription_id = ?",
                            [ids["subscription"][0]]).fetchone() == (9,)
        assert conn.execute("SELECT status FROM stripe_subscriptions WHERE subscription_id = ?",
                            [ids["subscription"][1]]).fetchone() == ("canceled",)
        assert conn.execute("SELECT billing_email FROM stripe_customers WHERE customer_id = ?",
                            [ids["customer"][2]]).fetchone() == ("new@org-2.example",)
        assert conn.execute("SELECT organization_id FROM stripe_customers WHERE customer_id = ?",
                            [late["id"]]).fetchone() == ("org-late",)
        found = _drift(conn, "catch-up")
        assert ("subscription", ids["subscription"][0], "quantity", "updated") in found
        assert ("subscription", ids["subscription"][1], "status", "updated") in found
        assert ("customer", late["id"], "*", "inserted") in found
        assert reporting.active_here_canceled_in_stripe(conn) == []

    # and again nothing: one call
    before = calls(res)
    with reconciler(res, db, "idle-2") as rec:
        assert sum(rec.incremental().differences.values()) == 0
    assert calls(res) - before == 1


def test_no_cursor_or_a_stale_one_means_a_full_sweep(world, local_stack):
    res, db = world
    _populate(res.client(), 2)
    with reconciler(res, db, "cold") as rec:
        report = rec.incremental()
    assert report.mode == "full" and "no cursor" in report.fallback_reason
    local_stack.stripe_control("advance", seconds=31 * 86400)     # renewals happen; events age out
    with reconciler(res, db, "stale") as rec:
        report = rec.incremental()
    assert report.mode == "full" and "30" in report.fallback_reason
    assert report.unrepaired == []
