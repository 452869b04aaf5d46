"""The operator jobs, reconciliation, the billing report assets and their checks, through Dagster, in the
PostgreSQL profile: the tests of test_billing_ops_jobs.py and test_billing_ops_assets.py, unchanged,
with `db` a migrated PostgreSQL database (the ledgers) and the reports published to the local stack's
asset bucket under a prefix of the test's own."""

from __future__ import annotations

import uuid

import pytest

from pipelines.store.postgres import PostgresDatabase
from tests.billing.test_billing_ops_assets import test_reconcile_then_assets_and_checks  # noqa: F401
from tests.billing.test_billing_ops_jobs import (  # noqa: F401
    test_refund_cancel_and_resync, test_seat_sync_job_reports_and_fails_on_an_isolated_failure)
from tests.servers import migrated_pg_database

pytestmark = pytest.mark.integration


@pytest.fixture
def db(local_stack):
    with migrated_pg_database() as url:
        database = PostgresDatabase(url)
        database.asset_store_url = f"{local_stack.env['ASSET_STORE_URL']}/{uuid.uuid4().hex[:12]}"
        yield database
        database.close()
