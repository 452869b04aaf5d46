"""Fixtures for the billing tests.

res (function) -> StripeResource
    The project's Stripe resource on the session's local Stripe, reset and without faults
    (billing_ops_helpers.stripe_resource: rate limit out of the way, quick retries, calls counted).
    Faults a test injects are cleared again afterwards.
db (function) -> DuckDBResource
    A fresh DuckDB file under tmp_path with every table of the project, created on first use.
world (function) -> (res, db)
    Both, with the file's tables already created.
"""

from __future__ import annotations

import pytest

from tests.billing.billing_ops_helpers import billing_database, clear_faults, stripe_resource


@pytest.fixture
def res(local_stack):
    local_stack.stripe_control("reset")
    clear_faults(local_stack)
    yield stripe_resource(local_stack)
    clear_faults(local_stack)


@pytest.fixture
def db(tmp_path):
    return billing_database(tmp_path / "billing.duckdb")


@pytest.fixture
def world(res, db):
    with db.connect():
        pass
    return res, db
