"""The billing-ops SQL on a real DuckDB file: the organisations loader, seat targets, billing
contacts, subscription-required notices, subscriptions_current, billing_daily and billing_leaks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from pipelines.billing import reporting
from pipelines.store.store import Store
from pipelines.billing.load_organizations import load, main as loader_main
from pipelines.billing.notices import TablesDirectory, orgs_without_subscription, send_subscription_required
from pipelines.billing.seats import seat_targets
from tests.billing.billing_ops_helpers import CollectingQueue

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _orgs_csv(tmp_path, rows: list[str]) -> str:
    path = tmp_path / "orgs.csv"
    path.write_text("id,name,type,created,deleted_at,billing_email\n" + "\n".join(rows) + "\n")
    return str(path)


def _members_csv(tmp_path, rows: list[str], name: str = "members.csv") -> str:
    path = tmp_path / name
    path.write_text("organization_id,user_id,role\n" + "\n".join(rows) + "\n")
    return str(path)


def _sub(conn, sid, org, status, quantity, customer="cus_1", created=None, item=None, price="price_1"):
    created = created or NOW - timedelta(days=10)
    conn.execute("INSERT INTO stripe_subscriptions (subscription_id, customer_id, organization_id, status, quantity,"
                 " current_period_end, created, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, now())",
                 [sid, customer, org, status, quantity, NOW + timedelta(days=20), created])
    conn.execute("INSERT INTO stripe_subscription_items (item_id, subscription_id, price_id, quantity, updated_at)"
                 " VALUES (?, ?, ?, ?, now())", [item or f"si_{sid}", sid, price, quantity])


def test_loader_upserts_reports_bad_rows_and_replaces_members(db, tmp_path):
    orgs = _orgs_csv(tmp_path, [
        "org-a,acme,company,2026-01-01T00:00:00Z,,billing@acme.example",
        "org-b,pyladies,Community,2026-02-01T00:00:00Z,,",
        ",nameless,company,2026-01-01T00:00:00Z,,",
        "org-c,weird,charity,2026-01-01T00:00:00Z,,",
    ])
    members = _members_csv(tmp_path, ["org-a,alice,Owner", "org-a,bob,Member", "org-b,carol,Owner",
                                      "org-zzz,dave,Member"])
    with Store(db.connect).transaction() as conn:
        report = load(conn, orgs, members)
        assert (report.organizations, report.members) == (2, 3)
        assert report.rejected == [f"{orgs} line 4: missing id",
                                   f"{orgs} line 5: type must be company or community, got charity",
                                   f"{members} line 5: unknown organization org-zzz"]
        assert conn.execute("SELECT type FROM organizations WHERE id = 'org-b'").fetchone() == ("community",)
        # bob left acme: with --replace-members the file is acme's whole list
        report = load(conn, None, _members_csv(tmp_path, ["org-a,alice,Owner"], "m2.csv"), replace_members=True)
        assert report.members_removed == 1
        assert conn.execute("SELECT user_id FROM organization_members WHERE organization_id = 'org-a'"
                            ).fetchall() == [("alice",)]


def test_loader_reads_parquet_and_the_cli_exits_nonzero_on_rejects(db, tmp_path, capsys):
    pq = tmp_path / "orgs.parquet"
    duckdb.sql("SELECT 'org-p' AS id, 'parq' AS name, 'company' AS type, TIMESTAMPTZ '2026-03-01 00:00:00+00' AS created,"
               " NULL::TIMESTAMPTZ AS deleted_at, 'b@parq.example' AS billing_email").write_parquet(str(pq))
    with db.connect():
        pass  # schema created
    assert loader_main([str(pq), "--db", db.path]) == 0
    bad = _orgs_csv(tmp_path, ["org-x,,company,2026-01-01T00:00:00Z,,"])
    assert loader_main([bad, "--db", db.path]) == 1
    assert "missing name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        loader_main(["--db", db.path])


def test_the_loader_tells_dagster_which_input_tables_it_loaded(db, tmp_path, monkeypatch, capsys):
    # With DAGSTER_HOME set, each loaded table gets a materialization with its row count, so the
    # billing reports refresh and lineage shows the load; without it, nothing is reported.
    import dagster as dg

    with db.connect():
        pass  # schema created
    orgs = _orgs_csv(tmp_path, ["org-a,acme,company,2026-01-01T00:00:00Z,,b@acme.example",
                                "org-b,pyladies,community,2026-01-01T00:00:00Z,,"])
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert loader_main([orgs, "--db", db.path]) == 0
    assert "reported to Dagster" not in capsys.readouterr().out

    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert loader_main([orgs, "--members", _members_csv(tmp_path, ["org-a,alice,Owner", "org-a,bob,Member"]),
                        "--db", db.path]) == 0
    assert "reported to Dagster (DAGSTER_HOME): organizations, organization_members updated" in capsys.readouterr().out
    with dg.DagsterInstance.from_config(str(home)) as instance:
        rows = {name: instance.get_latest_materialization_event(dg.AssetKey(name)).asset_materialization
                .metadata["rows"].value for name in ("organizations", "organization_members")}
    assert rows == {"organizations": 2, "organization_members": 2}


def _fixture_world(conn):
    conn.execute("""INSERT INTO organizations VALUES
        ('org-a', 'acme', 'company', ?, NULL, 'billing@acme.example'),
        ('org-b', 'pyladies', 'community', ?, NULL, NULL),
        ('org-c', 'umbrella', 'company', ?, NULL, 'billing@umbrella.example'),
        ('org-d', 'hooli', 'company', ?, NULL, 'billing@hooli.example'),
        ('org-e', 'defunct', 'company', ?, ?, 'billing@defunct.example'),
        ('org-f', 'canceled co', 'company', ?, NULL, 'billing@cc.example')""",
                 [NOW - timedelta(days=100), NOW - timedelta(days=100), NOW - timedelta(days=45),
                  NOW - timedelta(days=5), NOW - timedelta(days=200), NOW - timedelta(days=3),
                  NOW - timedelta(days=90)])
    conn.execute("""INSERT INTO organization_members VALUES
        ('org-a', 'alice', 'Owner', ?), ('org-a', 'bob', 'Member', NULL), ('org-a', 'eve', 'Member', NULL),
        ('org-b', 'carol', 'Owner', NULL), ('org-c', 'dan', 'Owner', NULL), ('org-f', 'fay', 'Owner', NULL)""",
                 [NOW - timedelta(days=99)])
    conn.execute("INSERT INTO stripe_customers (customer_id, organization_id, billing_email, updated_at) VALUES"
                 " ('cus_a', 'org-a', 'stripe@acme.example', now()), ('cus_b', 'org-b', NULL, now()),"
                 " ('cus_e', 'org-e', NULL, now()), ('cus_f', 'org-f', NULL, now())")
    conn.execute("INSERT INTO stripe_prices (price_id, product_id, currency, unit_amount, recurring_interval,"
                 " updated_at) VALUES ('price_1', 'prod_1', 'usd', 700, 'month', now()),"
                 " ('price_y', 'prod_1', 'eur', 12000, 'year', now())")
    _sub(conn, "sub_a", "org-a", "active", 2, "cus_a")
    _sub(conn, "sub_b", "org-b", "active", 1, "cus_b", price="price_y")     # community org still paying: leak
    _sub(conn, "sub_e", "org-e", "past_due", 1, "cus_e")                  # deleted org still billed: leak
    _sub(conn, "sub_f", "org-f", "canceled", 4, "cus_f")
    conn.execute("UPDATE stripe_subscriptions SET canceled_at = ?, ended_at = ? WHERE subscription_id = 'sub_f'",
                 [NOW, NOW])
    conn.execute("INSERT INTO stripe_payments (payment_id, kind, amount, currency, status, failure_code, created,"
                 " updated_at) VALUES ('pi_1', 'payment_intent', 700, 'usd', 'succeeded', NULL, ?, now()),"
                 " ('pi_2', 'payment_intent', 700, 'usd', 'requires_payment_method', 'card_declined', ?, now()),"
                 " ('re_1', 'refund', 200, 'usd', 'succeeded', NULL, ?, now()),"
                 " ('dp_1', 'dispute', 700, 'usd', 'needs_response', NULL, ?, now())", [NOW, NOW, NOW, NOW])


def test_seat_targets_follow_members_and_skip_deleted_orgs(db):
    with db.connect() as conn:
        _fixture_world(conn)
        targets = {t.organization_id: t for t in seat_targets(conn)}
    assert set(targets) == {"org-a", "org-b", "org-f"}      # org-e is deleted
    assert (targets["org-a"].quantity, targets["org-a"].members, targets["org-a"].item_id) == (2, 3, "si_sub_a")
    assert targets["org-f"].status == "canceled"


def test_billing_contact_and_subscription_required(db):
    with db.connect() as conn:
        _fixture_world(conn)
        directory = TablesDirectory(conn)
        contact = directory.contact_for_customer("cus_a")
        assert (contact.email, contact.username, contact.organization_name) == ("billing@acme.example", "alice", "acme")
        assert directory.contact_for_customer("cus_b") is None     # no billing email anywhere
        assert directory.subscription_status("sub_e") == "past_due"
        orgs = orgs_without_subscription(conn, NOW)
    # umbrella: 45 days, no subscription; canceled co: only a canceled one. hooli is in its grace period.
    assert [(o.organization_id, o.username) for o in orgs] == [("org-c", "dan"), ("org-f", "fay")]

    queue = CollectingQueue()
    first = send_subscription_required(db.connect, queue, NOW)
    again = send_subscription_required(db.connect, queue, NOW)
    assert len(first.dispatched) == 2 and again.dispatched == [] and again.already_sent == 2
    bodies = [json.loads(b) for b in queue.bodies]
    assert {b["kind"] for b in bodies} == {"organization-subscription-required"}
    assert sorted(b["recipients"][0]["email"] for b in bodies) == ["billing@cc.example", "billing@umbrella.example"]
    assert len(send_subscription_required(db.connect, queue, NOW + timedelta(days=1)).dispatched) == 2


def test_subscriptions_current_daily_and_leaks(db):
    with db.connect() as conn:
        _fixture_world(conn)
        figures = reporting.refresh_subscriptions_current(conn, NOW)
        rows = {r[0]: r for r in conn.execute(
            "SELECT organization_id, subscription_id, status, seats, good_standing, standing_reason"
            " FROM subscriptions_current").fetchall()}
        assert set(rows) == {"org-a", "org-b", "org-c", "org-d", "org-f"}
        assert rows["org-a"][1:5] == ("sub_a", "active", 2, True)
        assert rows["org-c"][4:] == (False, "no subscription")
        assert rows["org-d"][4:] == (True, "within the grace period")
        assert rows["org-f"][4:] == (False, "subscription canceled")
        assert figures["organizations"] == 5 and figures["not_good_standing"] == 2

        daily = reporting.refresh_billing_daily(conn, NOW)
        assert daily["payments_succeeded"] == 1 and daily["payments_failed"] == 1
        assert daily["refunds"] == 1 and daily["refunded_amount"] == 200 and daily["disputes"] == 1
        assert daily["churned_subscriptions"] == 1
        assert daily["mrr_usd"] == round((2 * 700 + 1 * 700) / 100, 2)   # sub_a and sub_e (past_due)
        assert daily["subscriptions_active"] == 2
        rate, failed, attempted = reporting.payment_failure_rate(conn, NOW)
        assert (rate, failed, attempted) == (0.5, 1, 2)

        leaks = reporting.refresh_billing_leaks(conn, NOW)
        assert [(l[0], l[1]) for l in leaks] == [
            ("company organisation past its grace period without an active subscription", "org-c"),
            ("company organisation past its grace period without an active subscription", "org-f"),
            ("subscription for a community organisation", "org-b"),
            ("subscription for a deleted organisation", "org-e"),
        ]
        assert reporting.live_without_customer_or_org(conn) == []
        conn.execute("DELETE FROM stripe_customers WHERE customer_id = 'cus_a'")
        assert reporting.live_without_customer_or_org(conn) == [("sub_a", "no customer row")]


def test_reconcile_records_unreadable_objects_and_keeps_the_batch(db):
    """A Stripe object with an unexpected status, or without a field, is recorded as unrepaired
    drift with the reason; the other objects of the batch are repaired."""
    from contextlib import contextmanager

    from pipelines.billing.reconcile import ReconcileReport, Reconciler
    from pipelines.billing.reconcile_tables import BillingTables
    from pipelines.store.transaction import transaction

    @contextmanager
    def tx():
        with db.connect() as conn, transaction(conn):
            yield conn

    def sub(sid, status, **extra):
        return {"id": sid, "object": "subscription", "customer": "cus_1", "status": status, "created": 1764500000,
                "cancel_at_period_end": False, "livemode": False, "metadata": {"organization_id": "org-a"},
                "items": {"object": "list", "data": [{"id": f"si_{sid}", "object": "subscription_item",
                                                      "quantity": 2, "price": {"id": "price_1", "object": "price",
                                                                               "product": "prod_1", "currency": "usd"},
                                                      "current_period_start": 1764500000,
                                                      "current_period_end": 1767000000}]}, **extra}

    objects = [sub("sub_ok", "active"), sub("sub_weird", "sleeping"), {"id": "sub_bare", "object": "subscription"}]
    rec = Reconciler(None, tx, BillingTables(), run_id="bad-input")
    report = ReconcileReport("bad-input", "full")
    rec.compare_and_repair("subscription", objects, report)
    reasons = {d.object_id: d.reason for d in report.unrepaired}
    assert set(reasons) == {"sub_weird", "sub_bare"}
    assert "sleeping" in reasons["sub_weird"] or "status" in reasons["sub_weird"]
    assert "customer" in reasons["sub_bare"]
    with db.connect() as conn:
        assert conn.execute("SELECT subscription_id, status, quantity FROM stripe_subscriptions").fetchall() == [
            ("sub_ok", "active", 2)]
        assert conn.execute("SELECT object_id, action FROM billing_drift WHERE action = 'unrepaired' ORDER BY 1"
                            ).fetchall() == [("sub_bare", "unrepaired"), ("sub_weird", "unrepaired")]
