"""Schedules of email dispatch."""

import dagster as dg

from pipelines.email.jobs import email_sends_daily_job

email_sends_daily_schedule = dg.ScheduleDefinition(
    name="email_sends_daily_schedule", job=email_sends_daily_job, cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Refreshes email_sends_daily (and runs its checks) every 15 minutes. If its runs fail, "
                "read the run's log: DuckDB lock waits resolve on the next tick, anything else is a bug.")
