"""Fixtures for the billing tests.

res (function) -> StripeResource
    The project's Stripe resource on the session's local Stripe, reset and without faults
    (billing_ops_helpers.stripe_resource: rate limit out of the way, quick retries, calls counted).
    Faults a test injects are cleared again afterwards.
db (function) -> DuckDBResource
    A fresh DuckDB file under tmp_path with every table of the project, created on first use.
world (function) -> (res, db)
    Both, with the file's tables already created.
conn (function) -> duckdb.DuckDBPyConnection
    A connection to a fresh DuckDB file under tmp_path with every table (the ingest unit tests).
stack (function) -> LocalStack
    The session's local stack with the local Stripe reset, without faults, delivering EventBridge
    envelopes, and stripe-events purged.
"""

from __future__ import annotations

import duckdb
import pytest

from pipelines.schema import ensure_schema
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


@pytest.fixture
def conn(tmp_path):
    c = duckdb.connect(str(tmp_path / "billing.duckdb"))
    ensure_schema(c)
    yield c
    c.close()


@pytest.fixture
def stack(local_stack, stack_env):
    local_stack.stripe_control("reset")
    local_stack.stripe_control("faults")
    local_stack.stripe_control("delivery", mode="eventbridge")
    local_stack.purge("stripe-events")
    return local_stack
