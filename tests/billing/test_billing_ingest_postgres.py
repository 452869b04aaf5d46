"""The billing ingest and projection tests (tests/billing/test_billing_ingest.py,
test_billing_projection_rules.py) on the PostgreSQL engine, unchanged: there `conn` is a DuckDB file,
here a connection to a migrated PostgreSQL database (autocommit; the consumer's store issues
BEGIN/COMMIT on it, as on DuckDB)."""

from __future__ import annotations

import psycopg
import pytest

from pipelines.store import postgres
from tests.servers import migrated_pg_database
from tests.billing.test_billing_ingest import (  # noqa: F401 - the ingest tests, collected here
    test_a_late_non_update_event_is_stale_without_a_call, test_a_quarantined_event_delivered_again_is_tried_again,
    test_an_object_lacking_a_needed_field_is_quarantined, test_an_older_update_does_not_overwrite_a_newer_one,
    test_an_older_update_without_a_client_is_stale, test_checkout_in_order_makes_no_call, test_customer_deleted_cascades_to_its_subscriptions,
    test_checkout_links_the_organisation_and_fetches_a_missing_subscription, test_duplicates_are_no_ops,
    test_foreign_api_version_is_re_retrieved_at_the_pinned_one, test_payment_methods_attach_detach_and_setup_intent,
    test_payments_one_row_per_money_movement, test_replay_verifies_a_webhook_again_after_the_secret_is_fixed,
    test_same_second_events_are_settled_by_stripe, test_subscription_lifecycle_projects_rows,
    test_tenant_filter_skips_only_another_named_tenant, test_unknown_type_is_recorded_not_failed,
    test_within_a_batch_the_newest_wins_without_calls)
from tests.billing.test_billing_ops_tables import (  # noqa: F401
    test_billing_contact_and_subscription_required, test_loader_reads_parquet_and_the_cli_exits_nonzero_on_rejects,
    test_loader_upserts_reports_bad_rows_and_replaces_members, test_reconcile_records_unreadable_objects_and_keeps_the_batch,
    test_seat_targets_follow_members_and_skip_deleted_orgs, test_the_loader_tells_dagster_which_input_tables_it_loaded)
from tests.billing.test_billing_ops_reconcile import (  # noqa: F401 - against the local Stripe (local_stack)
    test_full_sweep_repairs_random_drift_and_records_each,
    test_incremental_catches_up_missed_events_and_costs_one_call_when_nothing_changed,
    test_no_cursor_or_a_stale_one_means_a_full_sweep)
from tests.billing.test_billing_projection_rules import (  # noqa: F401
    test_a_credit_note_without_an_amount_is_refused_naming_it, test_a_refund_re_retrieved_keeps_its_charges_customer,
    test_a_refund_takes_its_charges_customer_in_any_delivery_order,
    test_a_wrong_typed_checkout_reference_is_refused_naming_its_field,
    test_credit_note_events_are_projected_through_the_registry)


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
    c.execute(f"TRUNCATE {', '.join(tables)}")


@pytest.fixture
def db(pg_url):
    """The module's database, emptied, with the DuckDB resource's calling convention."""
    database = postgres.PostgresDatabase(pg_url, max_size=2)
    with database.connect() as c:
        _empty(c)
    yield database
    database.close()
