"""The billing ingest and projection tests (tests/billing/test_billing_ingest.py,
test_billing_projection_rules.py) on the PostgreSQL engine, unchanged: there `conn` is a DuckDB file,
here a connection to a migrated PostgreSQL database (autocommit; the consumer's store issues
BEGIN/COMMIT on it, as on DuckDB)."""

from __future__ import annotations

import json

import psycopg
import pytest

from pipelines.store import postgres
from tests.billing.test_billing_ingest import (  # noqa: F401 - the ingest tests, collected here
    test_a_late_non_update_event_is_stale_without_a_call,
    test_a_quarantined_event_delivered_again_is_tried_again,
    test_an_object_lacking_a_needed_field_is_quarantined,
    test_an_older_update_does_not_overwrite_a_newer_one,
    test_an_older_update_without_a_client_is_stale,
    test_checkout_in_order_makes_no_call,
    test_checkout_links_the_organisation_and_fetches_a_missing_subscription,
    test_customer_deleted_cascades_to_its_subscriptions,
    test_duplicates_are_no_ops,
    test_foreign_api_version_is_re_retrieved_at_the_pinned_one,
    test_payment_methods_attach_detach_and_setup_intent,
    test_payments_one_row_per_money_movement,
    test_replay_verifies_a_webhook_again_after_the_secret_is_fixed,
    test_same_second_events_are_settled_by_stripe,
    test_subscription_lifecycle_projects_rows,
    test_tenant_filter_skips_only_another_named_tenant,
    test_unknown_type_is_recorded_not_failed,
    test_within_a_batch_the_newest_wins_without_calls,
)
from tests.billing.test_billing_ops_reconcile import (  # noqa: F401 - against the local Stripe (local_stack)
    test_full_sweep_repairs_random_drift_and_records_each,
    test_incremental_catches_up_missed_events_and_costs_one_call_when_nothing_changed,
    test_no_cursor_or_a_stale_one_means_a_full_sweep,
)
from tests.billing.test_billing_ops_tables import (  # noqa: F401
    test_billing_contact_and_subscription_required,
    test_loader_reads_parquet_and_the_cli_exits_nonzero_on_rejects,
    test_loader_upserts_reports_bad_rows_and_replaces_members,
    test_reconcile_records_unreadable_objects_and_keeps_the_batch,
    test_seat_targets_follow_members_and_skip_deleted_orgs,
    test_the_loader_tells_dagster_which_input_tables_it_loaded,
)
from tests.billing.test_billing_projection_rules import (  # noqa: F401
    test_a_credit_note_without_an_amount_is_refused_naming_it,
    test_a_refund_re_retrieved_keeps_its_charges_customer,
    test_a_refund_takes_its_charges_customer_in_any_delivery_order,
    test_a_wrong_typed_checkout_reference_is_refused_naming_its_field,
    test_credit_note_events_are_projected_through_the_registry,
)
from tests.servers import migrated_pg_database


@pytest.fixture(scope="module")
def pg_url():
    with migrated_pg_database() as url:
        yield url


@pytest.fixture
def conn(pg_url):
    """A connection to the module's database, its billing tables emptied first."""
    raw = psycopg.connect(pg_url, autocommit=True)
    c = postgres.PostgresConnection(raw)
    _empty(c)
    yield c
    raw.close()


def _empty(c) -> None:
    tables = [r[0] for r in c.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'").fetchall()]
    c.execute("; ".join(f"DELETE FROM {t}" for t in tables))   # cheaper than TRUNCATE on small tables


@pytest.fixture
def db(pg_url):
    """The module's database, emptied, with the DuckDB resource's calling convention."""
    database = postgres.PostgresDatabase(pg_url, max_size=2)
    with database.connect() as c:
        _empty(c)
    yield database
    database.close()


# ---- two drains at once: order independence under concurrency ---------------------------------------

TABLE_KEYS = {"stripe_customers": "customer_id", "stripe_subscriptions": "subscription_id",
              "stripe_subscription_items": "item_id", "stripe_products": "product_id", "stripe_prices": "price_id",
              "stripe_invoices": "invoice_id", "stripe_payment_methods": "payment_method_id",
              "stripe_payments": "payment_id", "stripe_object_watermarks": "object_id", "stripe_events": "event_id"}
# When and by which delivery a row was written, and which copy of an event was `stale` rather than
# `applied` (that depends on what else was in its batch): not the state.
NOT_STATE = {"updated_at", "retrieved_at", "received_at", "processed_at", "sqs_message_id", "outcome", "error",
             "re_retrieved"}


class FinalState:
    """Stands in for the re-retrieve call (as in test_billing_ingest): each object as Stripe has it
    now, i.e. as its newest event of the history carries it; a deleted customer as Stripe's stub."""

    def __init__(self, events: list[dict]):
        self.objects = {}
        for e in sorted(events, key=lambda e: (e["created"], e["id"])):
            obj = e["data"]["object"]
            self.objects[obj["id"]] = ({"id": obj["id"], "object": "customer", "deleted": True}
                                       if e["type"] == "customer.deleted" else obj)

    def __call__(self, object_type: str, object_id: str) -> dict | None:
        return self.objects.get(object_id)


def _history(orgs: int) -> list[dict]:
    """The benchmark's lifecycles (Checkout, renewals, failed payments, seat changes, refunds,
    disputes, cancellations), then the deletion of up to three customers whose subscription ended:
    their cascade meets the subscriptions' own events, which lock the customer too."""
    from bench import stripe_samples as s

    events = s.history(orgs, seed=5, renewals=3)
    end = max(e["created"] for e in events) + 100
    customers = {e["data"]["object"]["customer"]: e for e in events if e["type"] == "customer.subscription.deleted"}
    created = {e["data"]["object"]["id"]: e["data"]["object"] for e in events if e["type"] == "customer.created"}
    for n, cid in enumerate(sorted(customers)[:3]):
        events.append(s.event("customer.deleted", {**created[cid], "deleted": True}, end + n))
    return events


def _deliveries(events: list[dict], part: str, seed: int) -> list[str]:
    """Bodies for one drain: `part` of the history (its first 70% by time, its last 70%, or all of it),
    shuffled, 20% of them delivered twice."""
    import random

    from bench import stripe_samples as s

    rng = random.Random(seed)
    cut = int(len(events) * 0.7)
    chosen = {"first": events[:cut], "last": events[-cut:], "all": events}[part]
    bodies = [s.eventbridge_body(e) for e in chosen]
    bodies += [b for b in bodies if rng.random() < 0.2]
    rng.shuffle(bodies)
    return bodies


def _drain(url: str, orgs: int, part: str, seed: int, start, out) -> None:
    """One process draining its deliveries through the production consumer, 25 messages a batch."""
    from pipelines.billing.consumer import StripeEventConsumer
    from pipelines.common.consumer import process_batch
    from pipelines.common.queue_message import QueueMessage
    from pipelines.store.store import Store
    from tests.billing.test_billing_projection_rules import SETTINGS

    events = _history(orgs)
    bodies = _deliveries(events, part, seed)
    database = postgres.PostgresDatabase(url, max_size=2)
    consumer = StripeEventConsumer(SETTINGS, FinalState(events))
    totals: dict[str, int] = {}
    if start is not None:
        start.wait()
    with Store(database.connect) as store:
        for i in range(0, len(bodies), 25):
            batch = [QueueMessage(f"{part}-{j}", f"rh-{part}-{j}", b) for j, b in enumerate(bodies[i:i + 25], i)]
            for k, v in process_batch(store, consumer, batch).items():
                totals[k] = totals.get(k, 0) + v
    database.close()
    if out is not None:
        out.put((part, totals))


def _state(url: str) -> dict[str, list[dict]]:
    with psycopg.connect(url) as raw:
        out = {}
        for table, key in TABLE_KEYS.items():
            cur = raw.execute(f"SELECT * FROM {table} ORDER BY {key}")
            names = [d.name for d in cur.description]
            out[table] = [{n: v for n, v in zip(names, r) if n not in NOT_STATE} for r in cur.fetchall()]
    return out


def _differences(a: dict[str, list[dict]], b: dict[str, list[dict]]) -> list[tuple]:
    diffs = []
    for table, key in TABLE_KEYS.items():
        ra, rb = {r[key]: r for r in a[table]}, {r[key]: r for r in b[table]}
        for k in sorted(set(ra) | set(rb)):
            if ra.get(k) != rb.get(k):
                fields = [c for c in ra[k] if ra[k][c] != rb[k][c]] if k in ra and k in rb else ["(row)"]
                diffs.append((table, k, fields))
    return diffs


def test_two_concurrent_drains_of_overlapping_shuffled_histories_equal_one_serial_apply():
    import multiprocessing as mp

    orgs = 40
    with migrated_pg_database() as serial, migrated_pg_database() as concurrent:
        _drain(serial, orgs, "all", 1, None, None)
        ctx = mp.get_context("spawn")
        start, out = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_drain, args=(concurrent, orgs, part, seed, start, out))
                 for part, seed in (("first", 2), ("last", 3))]
        for p in procs:
            p.start()
        for p in procs:
            p.join(300)
            assert p.exitcode == 0
        totals = dict(out.get(timeout=5) for _ in procs)
        for part, t in totals.items():   # no batch failed (a deadlock would fall back to one by one)
            assert t.get("one_by_one", 0) == 0 and t.get("internal_errors", 0) == 0, (part, t)
            assert t.get("quarantined", 0) == 0, (part, t)
        # both drains met on the same objects: their overlap was delivered to each
        assert totals["first"]["duplicates"] > 0 and totals["last"]["duplicates"] > 0
        expected, got = _state(serial), _state(concurrent)
        assert len(expected["stripe_events"]) == len(_history(orgs))
        assert sum(r["deleted"] for r in expected["stripe_customers"]) >= 1
        assert sum(len(rows) for rows in expected.values()) > 2000
        assert not _differences(expected, got), _differences(expected, got)[:10]


def test_the_ingest_checks_count_on_postgres(conn):
    from pipelines.billing.checks import orphan_subscriptions, quarantine_share

    conn.execute("INSERT INTO stripe_customers (customer_id, deleted, updated_at) VALUES ('cus_1', false, now())")
    conn.execute("INSERT INTO stripe_subscriptions (subscription_id, customer_id, status, updated_at) VALUES "
                 "('sub_1', 'cus_1', 'active', now()), ('sub_2', 'cus_gone', 'active', now())")
    assert orphan_subscriptions(conn) == 1
    conn.execute("INSERT INTO stripe_events (event_id, type, created, livemode, object_type, object_id, received_at, "
                 "processed_at, outcome) VALUES "
                 "('evt_1', 'customer.created', now(), false, 'customer', 'cus_1', now(), now(), 'applied'), "
                 "('evt_2', 'customer.created', now(), false, 'customer', 'cus_2', now(), now(), 'quarantined'), "
                 "('evt_3', 'customer.created', now(), false, 'customer', 'cus_3', now() - INTERVAL '2 days', now(), "
                 "'quarantined')")
    assert tuple(quarantine_share(conn)) == (1, 2)


def test_every_real_sample_is_ingested_or_quarantined_with_a_reason_on_postgres(conn):
    """test_billing_ingest's test of every file in tests/fixtures/stripe, on one emptied database per sample."""
    from tests.billing.test_billing_ingest import Stripe, _real_samples, msg, run

    samples = _real_samples()
    assert len(samples) == 44
    outcomes = {}
    for name, body, attrs, evt, settings in samples:
        for with_client in (True, False):
            _empty(conn)
            obj = evt["data"]["object"]
            counters = run(conn, [msg(body, attrs)], Stripe({obj["id"]: obj}) if with_client else None,
                           settings=settings)
            outcome, error = conn.execute("SELECT outcome, error FROM stripe_events").fetchone()
            if with_client:
                assert outcome in ("applied", "ignored-tenant", "unknown-type"), (name, outcome, error)
                outcomes[name] = outcome
            else:
                assert outcome in ("quarantined", "ignored-tenant", "unknown-type"), (name, outcome)
            if outcome == "quarantined":
                assert counters["quarantined"] == 1
                assert "API version" in conn.execute("SELECT reason FROM quarantine").fetchone()[0]
    assert sum(o == "applied" for o in outcomes.values()) >= 38, outcomes


def test_a_refund_and_its_charge_committed_at_once_still_give_the_refund_its_customer(pg_url, conn):
    """Two drains' transactions at once: one holds a refund.created (not yet committed) while the other
    commits its charge's charge.succeeded. Serially, whichever comes second gives the refund the charge's
    customer (test_a_refund_takes_its_charges_customer_in_any_delivery_order). At once, neither would see
    the other's uncommitted row; the charge's id is among the refund batch's locked objects, so the charge
    batch waits for the refund's commit and then sees it."""
    import threading

    from bench import stripe_samples as s
    from pipelines.billing.consumer import StripeEventConsumer
    from pipelines.common.queue_message import QueueMessage
    from pipelines.store.transaction import transaction
    from tests.billing.test_billing_projection_rules import (
        CHARGE,
        SETTINGS,
        T,
        refund,
        refund_row,
    )

    def prepared(consumer, event):
        return consumer.prepare([QueueMessage(event["id"], "rh", s.eventbridge_body(event))])

    a, b = StripeEventConsumer(SETTINGS), StripeEventConsumer(SETTINGS)
    with psycopg.connect(pg_url, autocommit=True) as raw_a, psycopg.connect(pg_url, autocommit=True) as raw_b:
        conn_a, conn_b = postgres.PostgresConnection(raw_a), postgres.PostgresConnection(raw_b)
        charge_done = threading.Event()

        def charge_batch():
            with transaction(conn_b):
                b.commit(conn_b, prepared(b, s.event("charge.succeeded", CHARGE, T + 1)))
            charge_done.set()

        with transaction(conn_a):
            a.commit(conn_a, prepared(a, s.event("refund.created", refund(), T + 10)))
            other = threading.Thread(target=charge_batch)
            other.start()
            # time for the charge batch to run, if nothing held it, while the refund's transaction is open
            waited = not charge_done.wait(1.5)
        other.join(30)
        assert charge_done.is_set()
    assert refund_row(conn) == ("cus_A", "ch_1", "succeeded", 400)
    assert waited   # on the charge's lock


def test_dunning_after_the_commit_sends_a_notice_once_on_postgres(db):
    """The consumer's after_commit (dunning) on PostgreSQL: a failed invoice payment of a customer whose
    organisation has a billing contact dispatches payment-failed once; the event again sends nothing."""
    from bench import stripe_samples as s
    from pipelines.billing.consumer import StripeEventConsumer
    from pipelines.common.consumer import process_batch
    from pipelines.common.queue_message import QueueMessage
    from pipelines.store.store import Store
    from tests.billing.billing_ops_helpers import CollectingQueue
    from tests.billing.test_billing_projection_rules import SETTINGS, T

    with db.connect() as c:
        c.execute("INSERT INTO organizations VALUES ('org-1', 'acme', 'company', now(), NULL, 'billing@acme.example')")
        c.execute("INSERT INTO organization_members VALUES ('org-1', 'alice', 'Owner', NULL)")
    queue = CollectingQueue()
    consumer = StripeEventConsumer(SETTINGS, notices=queue)
    failed = s.event("invoice.payment_failed", s.invoice("in_1", "cus_A", "sub_A", T + 5, "open", 1500, 1,
                                                         "subscription_cycle"), T + 5)
    batches = [[s.event("customer.created", s.customer("cus_A", T, "billing@example.org", "org-1"), T), failed],
               [failed]]
    with Store(db.connect) as store:
        reports = [process_batch(store, consumer, [QueueMessage(f"m{i}-{j}", "rh", s.eventbridge_body(e))
                                                   for j, e in enumerate(batch)])
                   for i, batch in enumerate(batches)]
    assert [json.loads(b)["kind"] for b in queue.bodies] == ["payment-failed"]
    assert json.loads(queue.bodies[0])["recipients"][0]["email"] == "billing@acme.example"
    assert reports[0]["notices_dispatched"] == 1 and reports[1]["notices_already_sent"] == 1
    with db.connect() as c:
        assert c.execute("SELECT kind, event_id FROM billing_notices").fetchall() == [("payment-failed", failed["id"])]


def test_a_reconcile_repair_and_an_older_event_at_once_keep_the_repair(db):
    """A reconcile repair of a subscription (Stripe's state now) still open while a drain brings an older
    update of it. Serially the older event is late (the repair moved the watermark) and changes nothing.
    At once, the repair holds the subscription's lock from its read to its commit, so the drain decides
    after it, and the same holds."""
    import threading
    from contextlib import contextmanager

    from bench import stripe_samples as s
    from pipelines.billing.consumer import StripeEventConsumer
    from pipelines.billing.reconcile import Reconciler, ReconcileReport
    from pipelines.billing.reconcile_tables import BillingTables
    from pipelines.common.consumer import process_batch
    from pipelines.common.queue_message import QueueMessage
    from pipelines.store.store import Store
    from pipelines.store.transaction import transaction
    from tests.billing.test_billing_projection_rules import SETTINGS, T

    written, release, drained = threading.Event(), threading.Event(), threading.Event()

    @contextmanager
    def held_open():
        with db.connect() as conn, transaction(conn):
            yield conn
            written.set()      # the repair is written, not yet committed
            release.wait(10)

    def drain():
        older = s.event("customer.subscription.updated", s.subscription("sub_A", "cus_A", T, "past_due", 3, T), T + 5)
        with Store(db.connect) as store:
            process_batch(store, StripeEventConsumer(SETTINGS), [QueueMessage("m1", "rh", s.eventbridge_body(older))])
        drained.set()

    now = s.subscription("sub_A", "cus_A", T, "active", 9, T + 3600)
    reconciler = Reconciler(None, held_open, BillingTables(mark=(T + 7200, "reconcile:r1")), run_id="r1")
    repair = threading.Thread(target=reconciler.compare_and_repair, args=("subscription", [now], ReconcileReport("r1", "full")))
    repair.start()
    assert written.wait(10)
    other = threading.Thread(target=drain)
    other.start()
    waited = not drained.wait(1.5)   # time for the drain to run, if nothing held it
    release.set()
    repair.join(30)
    other.join(30)
    assert drained.is_set()
    with db.connect() as c:
        assert c.execute("SELECT status, quantity FROM stripe_subscriptions").fetchall() == [("active", 9)]
        assert c.execute("SELECT event_id FROM stripe_object_watermarks").fetchall() == [("reconcile:r1",)]
        assert c.execute("SELECT outcome FROM stripe_events").fetchall() == [("stale",)]
    assert waited
