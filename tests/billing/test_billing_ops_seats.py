"""Seat sync against the local Stripe: quantities follow organization_members; an organisation
whose update fails is reported and does not stop the others; no call when already right."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipelines.billing import customers, payments, products, subscriptions
from pipelines.billing.seats import seat_targets, sync_seats
from tests.billing.billing_ops_helpers import calls

pytestmark = pytest.mark.integration


def _subscribe(client, price: str, org: str, quantity: int) -> dict:
    cus = customers.create_customer(client, organization_id=org, name=org)
    pm = payments.attach_payment_method(client, "pm_card_visa", cus["id"])
    payments.set_default_payment_method(client, cus["id"], pm["id"])
    return subscriptions.create_subscription(client, customer_id=cus["id"], price_id=price, organization_id=org,
                                             quantity=quantity).to_dict()


def _record(conn, org: str, members: int, sub: dict | None, status: str | None = None, item_id: str | None = None):
    """What the platform and the Stripe ingestion would have put in the tables."""
    conn.execute("INSERT INTO organizations VALUES (?, ?, 'company', ?, NULL, ?)",
                 [org, org, datetime.now(UTC) - timedelta(days=90), f"billing@{org}.example"])
    for i in range(members):
        conn.execute("INSERT INTO organization_members VALUES (?, ?, 'Member', NULL)", [org, f"{org}-u{i}"])
    if sub is None:
        return
    item = sub["items"]["data"][0]
    conn.execute("INSERT INTO stripe_subscriptions (subscription_id, customer_id, organization_id, status, quantity,"
                 " updated_at) VALUES (?, ?, ?, ?, ?, now())",
                 [sub["id"], sub["customer"], org, status or sub["status"], item["quantity"]])
    conn.execute("INSERT INTO stripe_subscription_items (item_id, subscription_id, quantity, updated_at)"
                 " VALUES (?, ?, ?, now())", [item_id or item["id"], sub["id"], item["quantity"]])


def test_quantities_follow_members_and_failures_are_isolated(local_stack, res, db):
    client = res.client()
    product = products.create_or_update_product(client, name="Organization seats")
    price = products.create_or_update_price(client, product_id=product["id"], unit_amount=700, currency="usd").price["id"]
    grow = _subscribe(client, price, "org-grow", 2)         # 5 members now
    shrink = _subscribe(client, price, "org-shrink", 9)     # 4 members now
    same = _subscribe(client, price, "org-same", 3)         # 3 members: no call
    broken = _subscribe(client, price, "org-broken", 1)     # the table's item id is stale: Stripe refuses
    gone = _subscribe(client, price, "org-gone", 2)
    subscriptions.cancel(client, gone["id"])                 # canceled: skipped
    with db.connect() as conn:
        _record(conn, "org-grow", 5, grow)
        _record(conn, "org-shrink", 4, shrink)
        _record(conn, "org-same", 3, same)
        _record(conn, "org-broken", 6, broken, item_id="si_stale")
        _record(conn, "org-gone", 7, gone, status="canceled")
        targets = seat_targets(conn)

    before = calls(res, "POST /v1/subscriptions/{id}")
    report = sync_seats(client, targets)
    assert calls(res, "POST /v1/subscriptions/{id}") - before == 3      # grow, shrink, and the broken attempt
    assert sorted(report.changed) == [("org-grow", grow["id"], 2, 5), ("org-shrink", shrink["id"], 9, 4)]
    assert report.unchanged == 1
    assert report.skipped == [("org-gone", gone["id"], "status canceled")]
    [(org, sub_id, error)] = report.failed
    assert (org, sub_id) == ("org-broken", broken["id"]) and "InvalidRequestError" in error and "HTTP 400" in error
    assert "sk_test" not in error

    def quantity(sub):
        return client.v1.subscriptions.retrieve(sub["id"])["items"]["data"][0]["quantity"]

    assert (quantity(grow), quantity(shrink), quantity(same), quantity(broken)) == (5, 4, 3, 1)
