"""The code location loads with exactly the documented jobs, sensors, schedules and assets."""

from pathlib import Path

import dagster as dg

from pipelines.settings import SETTINGS
from tests.paths import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()

JOBS = {"send_email_batch_job", "email_sends_daily_job", "ingest_ses_notifications_job",
        "replay_ses_quarantine_job", "ses_cleanup_job", "ingest_stripe_events_job", "replay_stripe_quarantine_job"}
BILLING_OPS_JOBS = {"refund_payment_job", "cancel_subscription_job", "resync_customer_job", "seat_sync_job",
                    "reconcile_billing_job", "organization_subscription_notice_job", "billing_reports_job"}
BILLING_OPS_SCHEDULES = {"seat_sync_schedule", "reconcile_billing_schedule", "reconcile_billing_full_schedule",
                         "organization_subscription_notice_schedule", "billing_reports_schedule"}
BILLING_OPS_ASSETS = {"subscriptions_current", "billing_daily", "billing_leaks"}
SENSORS = {"email_requests_sensor", "ses_notifications_sensor", "stripe_events_sensor", "automation_sensor"}
SCHEDULES = {"email_sends_daily_schedule", "ses_cleanup_schedule"}
ROLLUPS = {"email_sends_daily", "email_status", "email_delivery_daily", "ses_reputation"}
LEDGERS = {"email_messages", "email_events", "email_addresses", "quarantine"}
ASSETS = ROLLUPS | LEDGERS
BILLING_ASSETS = {"stripe_events", "stripe_customers", "stripe_subscriptions", "stripe_subscription_items",
                  "stripe_products", "stripe_prices", "stripe_invoices", "stripe_payment_methods", "stripe_payments",
                  "stripe_credit_notes",
                  "organizations", "organization_members"}
RESOURCES = {"store", "email_requests_queue", "ses_notifications_queue", "stripe_events_queue", "sns",
             "email_sender", "templates", "stripe", "email_settings", "sns_verifier", "address_changes_queue"}


def _defs():
    from pipelines.definitions import defs

    return defs


def test_definitions_contain_the_expected_names():
    defs = _defs()
    repo = defs.get_repository_def()
    jobs = {j.name for j in repo.get_all_jobs() if not j.name.startswith("__")}
    assert jobs == JOBS | BILLING_OPS_JOBS
    assert {s.name for s in repo.sensor_defs} == SENSORS
    assert {s.name for s in repo.schedule_defs} == SCHEDULES | BILLING_OPS_SCHEDULES
    assets = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert assets == ASSETS | BILLING_ASSETS | BILLING_OPS_ASSETS
    assert set(defs.resources) == RESOURCES
    for key in ASSETS - {"quarantine"}:
        assert repo.asset_graph.get(dg.AssetKey(key)).group_name == "email"
    assert repo.asset_graph.get(dg.AssetKey("quarantine")).group_name == "queues"
    for key in BILLING_ASSETS | BILLING_OPS_ASSETS:
        assert repo.asset_graph.get(dg.AssetKey(key)).group_name == "billing"


def test_billing_tables_descend_from_the_ledger():
    graph = _defs().get_repository_def().asset_graph
    for key in BILLING_ASSETS - {"stripe_events", "organizations", "organization_members"}:
        assert graph.get(dg.AssetKey(key)).parent_keys == {dg.AssetKey("stripe_events")}, key


def test_lineage_runs_from_each_queues_ledgers_to_every_rollup():
    graph = _defs().get_repository_def().asset_graph

    def upstream(key: str) -> set[str]:
        return {k.to_user_string() for k in graph.upstream_key_iterator(dg.AssetKey(key))}

    assert upstream("email_sends_daily") >= {"email_messages"}
    for rollup in ("email_status", "email_delivery_daily", "ses_reputation"):
        assert upstream(rollup) >= {"email_messages", "email_events"}, rollup
    for key in ROLLUPS:
        assert graph.get(dg.AssetKey(key)).automation_condition is not None, key
    for key in LEDGERS:   # written by drains, not materialized as assets
        assert not graph.get(dg.AssetKey(key)).is_executable, key


def test_sensors_run_by_default_and_target_their_drain_jobs():
    defs = _defs()
    for sensor, job in [("email_requests_sensor", "send_email_batch_job"),
                        ("ses_notifications_sensor", "ingest_ses_notifications_job"),
                        ("stripe_events_sensor", "ingest_stripe_events_job")]:
        sd = defs.resolve_sensor_def(sensor)
        assert sd.job_name == job
        assert sd.default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_sensor_def("automation_sensor").default_status == dg.DefaultSensorStatus.RUNNING


def test_drains_take_their_queues_pool_and_other_writers_the_duckdb_pool():
    # Drains hold DuckDB only while they commit, so different queues run side by side (one drain
    # per queue); rollups and maintenance keep the shared `duckdb` pool. Every pool's limit is 1.
    import yaml

    defs = _defs()
    for job, pool in [("send_email_batch_job", "drain-email-requests"),
                      ("ingest_ses_notifications_job", "drain-ses-notifications"),
                      ("replay_ses_quarantine_job", "drain-ses-notifications"),
                      ("ingest_stripe_events_job", "drain-stripe-events"),
                      ("replay_stripe_quarantine_job", "drain-stripe-events"), ("ses_cleanup_job", "duckdb")]:
        for node in defs.resolve_job_def(job).graph.node_defs:
            assert node.pool == pool, (job, node.name)
    for key in ROLLUPS:
        assert defs.resolve_assets_def(key).op.pool == "duckdb", key
    root = REPO_ROOT / ".dagster"
    for config in (root / "dagster.yaml", root / "production" / "dagster.yaml"):
        assert yaml.safe_load(config.read_text())["concurrency"]["pools"]["default_limit"] == 1, config


def test_readme_names_every_definition_and_setting():
    names = (JOBS | SENSORS | SCHEDULES | ASSETS | BILLING_ASSETS | BILLING_OPS_JOBS | BILLING_OPS_SCHEDULES
             | BILLING_OPS_ASSETS | {s.name for s in SETTINGS})
    missing = sorted(n for n in names if f"`{n}`" not in README)
    assert not missing, f"README does not mention: {missing}"
    assert "make dev" in README and "make test" in README


def test_once_the_ledgers_have_rows_automation_runs_every_asset_and_every_check(tmp_path):
    # `make dev` materializes the whole graph on its own: as soon as each drain has reported its
    # ledgers (and the inputs were loaded), one automation tick requests every materializable asset and
    # every asset check, the checks on the ingested Stripe tables included. Before that: nothing.
    from pipelines.automation import automation_sensor

    defs = _defs()
    graph = defs.resolve_asset_graph()
    target = automation_sensor.asset_selection  # what the sensor evaluates, as make dev runs it
    with dg.DagsterInstance.ephemeral(tempdir=str(tmp_path)) as instance:
        idle = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=target)
        assert idle.total_requested == 0
        reported = [k for k in graph.get_all_asset_keys() if not graph.get(k).is_materializable]
        assert {k.to_user_string() for k in reported} == LEDGERS | BILLING_ASSETS
        for key in reported:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key))
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=idle.cursor,
                                                   asset_selection=target)
    requested = {r.key for r in result.results if r.true_subset.size}
    materializable = {k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable}
    assert materializable <= requested, materializable - requested
    # A check declared on its asset (check_specs) runs inside the asset's own step; any other check
    # must be requested itself.
    with_their_asset = {c for k in requested if isinstance(k, dg.AssetKey) for c in defs.resolve_assets_def(k).check_keys}
    assert set(graph.asset_check_keys) <= requested | with_their_asset, \
        set(graph.asset_check_keys) - requested - with_their_asset
