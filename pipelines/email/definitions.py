"""Email dispatch: the email-requests drain (job, op, doorbell sensor), the daily sends asset,
its checks, job and schedule. Resources are wired in pipelines/resource_defs.py."""

import dagster as dg

from pipelines.email.assets import email_messages, email_sends_daily
from pipelines.common.factory import queue_consumer_defs
from pipelines.email.jobs import EMAIL_REQUESTS, email_sends_daily_job
from pipelines.email.schedules import email_sends_daily_schedule

defs = dg.Definitions.merge(
    queue_consumer_defs(EMAIL_REQUESTS),
    dg.Definitions(assets=[email_messages, email_sends_daily], jobs=[email_sends_daily_job],
                   schedules=[email_sends_daily_schedule]),
)
