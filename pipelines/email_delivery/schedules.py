"""Daily retention."""

import dagster as dg

from pipelines.email_delivery.jobs import ses_cleanup_job

ses_cleanup_schedule = dg.ScheduleDefinition(
    name="ses_cleanup_schedule",
    job=ses_cleanup_job,
    cron_schedule="17 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Deletes sent/delivered messages after 14 days and everything after 90, with their events.",
)
