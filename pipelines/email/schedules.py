"""Schedules of email dispatch."""

import dagster as dg

from pipelines.email.jobs import email_sends_daily_job

email_sends_daily_schedule = dg.ScheduleDefinition(
    name="email_sends_daily_schedule", job=email_sends_daily_job, cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Refreshes email_sends_daily every 15 minutes.")
