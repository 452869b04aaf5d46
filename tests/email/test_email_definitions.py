"""The dispatch definitions load and are wired as documented."""

import dagster as dg

from pipelines.email import definitions as email_defs
from pipelines.email.jobs import email_requests_spec


def test_definitions_are_wired():
    from pipelines.definitions import defs

    job = defs.resolve_job_def("send_email_batch_job")
    op = job.graph.node_defs[0]
    assert op.name == "send_email_batch" and op.pool == "drain-email-requests"
    assert op.required_resource_keys >= {"store", "email_requests_queue", "email_sender", "templates",
                                         "email_settings"}
    sensor = defs.resolve_sensor_def("email_requests_sensor")
    assert sensor.job_name == "send_email_batch_job"
    assert sensor.required_resource_keys == {"email_requests_queue", "store"}   # store: its engine
    asset = defs.resolve_assets_def("email_sends_daily")
    key = dg.AssetKey("email_sends_daily")
    assert asset.group_names_by_key[key] == "email"
    assert asset.op.pool == "duckdb"
    assert {c.name for c in asset.check_specs} == {"email_sends_daily_matches_ledger", "email_no_stuck_pending",
                                                     "email_failure_rate_today"}
    assert defs.resolve_schedule_def("email_sends_daily_schedule").cron_schedule == "*/15 * * * *"
    # Resources are wired once, at the root (pipelines/resource_defs.py); a domain declares none.
    assert "email_settings" in defs.resources and not email_defs.build(email_requests_spec(on_recorded=None)).resources


def test_op_config_defaults_keep_the_inflight_window_small():
    from pipelines.email.jobs import SendEmailBatchConfig, threads_for

    cfg = SendEmailBatchConfig()
    assert cfg.inflight_window <= 100 and cfg.batch_size <= 500
    assert threads_for(None, 0) == 8 and threads_for(200, 0) == 20 and threads_for(14, 0) == 8
    assert threads_for(200, 3) == 3
