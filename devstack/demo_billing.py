"""Demo billing data for the local stack: organisations and members in DuckDB, and their
customers and subscriptions in the local Stripe, so the billing jobs and assets have something
to show.  `python -m devstack.demo_billing` (reads DUCKDB_PATH and STRIPE_API_BASE).

The mix is a healthy platform's: paying companies (one through Checkout, others subscribed
directly), a company whose card is declined at renewal (dunning, once the local Stripe's clock is
advanced), a young company still within its grace period, and community organisations. No billing
leak: every check on the billing reports is green. LEAKING_ORGS are the unhealthy ones the `leak`
incident adds (devstack/incidents.py): a company past its grace period without a subscription and
a deleted organisation still subscribed.
Running it again changes nothing: organisations are upserted and every Stripe write is keyed.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import duckdb
import stripe

from pipelines.billing import customers, payments, products, subscriptions
from pipelines.billing.tenant import tenant_from_env
from pipelines.billing.vocab import SubscriptionStatus

# id, name, type, age in days, deleted, card (None: no subscription), members, via checkout
ORGS = [
    ("org-acme", "acme", "company", 120, False, "pm_card_visa", 5, True),
    ("org-globex", "globex", "company", 90, False, "pm_card_visa", 12, False),
    ("org-initech", "initech", "company", 60, False, "pm_card_chargeDeclined", 3, False),
    ("org-hooli", "hooli", "company", 5, False, None, 2, False),
    ("org-pyladies", "pyladies", "community", 200, False, None, 30, False),
    ("org-astropy", "astropy", "community", 300, False, None, 18, False),
]
# Billing leaks, added by `python -m devstack incident leak`, never by the default demo.
LEAKING_ORGS = [
    ("org-umbrella", "umbrella", "company", 45, False, None, 4, False),
    ("org-defunct", "defunct", "company", 150, True, "pm_card_visa", 1, False),
]


def _control(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"{base.rstrip('/')}/_control/{path}", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def fill_organizations(conn: duckdb.DuckDBPyConnection, now: datetime, orgs: list[tuple] = ORGS) -> None:
    for oid, name, kind, age, deleted, _card, members, _checkout in orgs:
        created = now - timedelta(days=age)
        conn.execute("INSERT INTO organizations (id, name, type, created, deleted_at, billing_email)"
                     " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
                     " type = excluded.type, deleted_at = excluded.deleted_at, billing_email = excluded.billing_email",
                     [oid, name, kind, created, now - timedelta(days=2) if deleted else None,
                      f"billing@{name}.example"])
        for i in range(members):
            role = "Owner" if i == 0 else "Member"
            conn.execute("INSERT INTO organization_members (organization_id, user_id, role, joined_at)"
                         " VALUES (?, ?, ?, ?) ON CONFLICT (organization_id, user_id) DO NOTHING",
                         [oid, f"{name}{i}", role, created + timedelta(days=i)])


def fill_stripe(client: stripe.StripeClient, api_base: str, environ=None, orgs: list[tuple] = ORGS) -> dict[str, str]:
    """Customers and subscriptions in the local Stripe; returns organisation -> subscription id."""
    tenant = tenant_from_env(environ)
    product = products.create_or_update_product(client, name="Organization seats",
                                                description="One seat per organisation member, monthly",
                                                unit_label="seat")
    price = products.create_or_update_price(client, product_id=product["id"], unit_amount=700, currency="usd").price
    out = {}
    for oid, name, _kind, _age, _deleted, card, members, checkout in orgs:
        if card is None:
            continue
        customer = customers.create_customer(client, organization_id=oid, name=name, tenant=tenant,
                                             description=f"organisation {name}", email=f"billing@{name}.example")
        live = [s for s in client.v1.subscriptions.list({"customer": customer["id"]}).data
                if s["status"] not in SubscriptionStatus.ENDED]
        if live:   # filled before: nothing to add
            out[oid] = live[0]["id"]
            continue
        if checkout:
            session = subscriptions.create_checkout_session(
                client, customer_id=customer["id"], price_id=price["id"], organization_id=oid, quantity=members,
                success_url="http://127.0.0.1:3000/billing/done", cancel_url="http://127.0.0.1:3000/billing/cancel",
                tenant=tenant, scope="demo")
            done = _control(api_base, f"checkout_sessions/{session['id']}/complete", {"payment_method": card})
            out[oid] = done.get("subscription")
            continue
        pm = payments.attach_payment_method(client, card, customer["id"])
        payments.set_default_payment_method(client, customer["id"], pm["id"], scope="demo")
        if card == "pm_card_chargeDeclined":
            # signs up with a good card, which then starts failing: renewals go to dunning
            good = payments.attach_payment_method(client, "pm_card_visa", customer["id"])
            payments.set_default_payment_method(client, customer["id"], good["id"], scope="demo-good")
            sub = subscriptions.create_subscription(client, customer_id=customer["id"], price_id=price["id"],
                                                    organization_id=oid, quantity=members, tenant=tenant)
            _control(api_base, f"payment_methods/{good['id']}/fail", {})
        else:
            sub = subscriptions.create_subscription(client, customer_id=customer["id"], price_id=price["id"],
                                                    organization_id=oid, quantity=members, tenant=tenant)
        out[oid] = sub["id"]
    return out


def fill(environ: dict[str, str], before_report: Callable[[], object] | None = None,
         orgs: list[tuple] = ORGS, reporter: str = "devstack.demo_billing") -> dict[str, str]:
    """Organisations into DuckDB, their Stripe customers and subscriptions (the local Stripe
    delivers the events to the stripe-events queue), then the input tables reported to Dagster when
    DAGSTER_HOME is set. `before_report` is waited on first: `make dev` fills while `dagster dev`
    starts, and only one process may create a fresh instance's storage."""
    from pipelines.billing.assets import INPUTS, report_inputs
    from pipelines.common.ledgers import table_rows
    from pipelines.schema import database
    from pipelines.store.store import Store
    from resources.stripe_client import StripeResource

    with Store(database(environ["DUCKDB_PATH"]).connect).transaction() as conn:
        fill_organizations(conn, datetime.now(UTC), orgs)
        rows = table_rows(conn, INPUTS)
    resource = StripeResource(api_key=environ.get("STRIPE_API_KEY", "sk_test_local"),
                              webhook_secret=environ.get("STRIPE_WEBHOOK_SECRET", "whsec_local"),
                              api_base=environ["STRIPE_API_BASE"])
    subscriptions = fill_stripe(resource.client(), environ["STRIPE_API_BASE"], environ, orgs)
    if before_report:
        before_report()
    report_inputs(rows, reporter, environ.get("DAGSTER_HOME"))
    return subscriptions


def main() -> int:
    db_path, api_base = os.environ.get("DUCKDB_PATH"), os.environ.get("STRIPE_API_BASE")
    if not db_path or not api_base:
        print("set DUCKDB_PATH and STRIPE_API_BASE (the local stack's env: python -m devstack env)", file=sys.stderr)
        return 2
    subs = fill(dict(os.environ))
    print(f"{len(ORGS)} organisations in {db_path}; subscriptions in the local Stripe: {subs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
