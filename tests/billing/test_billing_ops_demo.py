"""The local stack's demo billing data: organisations in DuckDB, their customers and
subscriptions in the local Stripe; filling twice changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from devstack.demo_billing import ORGS, fill_organizations, fill_stripe

pytestmark = pytest.mark.integration


def test_demo_fill_is_repeatable(local_stack, res, db):
    client = res.client()
    for _ in range(2):
        with db.connect() as conn:
            fill_organizations(conn, datetime.now(UTC))
        subs = fill_stripe(client, local_stack.stripe_base)
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM organizations").fetchone()[0] == len(ORGS)
        assert conn.execute("SELECT count(*) FROM organization_members").fetchone()[0] == sum(o[6] for o in ORGS)
    paying = [o for o in ORGS if o[5] is not None]
    assert set(subs) == {o[0] for o in paying}
    stored = local_stack.stripe_control("state/subscription", method="GET")["data"]
    assert sorted(s["id"] for s in stored) == sorted(subs.values())          # the second fill made none
    by_org = {s["metadata"]["organization_id"]: s for s in stored}
    assert by_org["org-acme"]["items"]["data"][0]["quantity"] == 5 and by_org["org-acme"]["status"] == "active"
    assert len(local_stack.stripe_control("state/customer", method="GET")["data"]) == len(paying)
