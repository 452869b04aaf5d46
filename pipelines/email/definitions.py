"""Email dispatch: the email-requests drain (job, op, doorbell sensor), the daily sends asset,
its checks, job and schedule. Resources are wired in pipelines/resource_defs.py."""

import dagster as dg

from pipelines.email.assets import email_messages, email_sends_daily
from pipelines.common.factory import queue_consumer_defs
from pipelines.common.factory import QueueSpec
from pipelines.email.jobs import email_sends_daily_job
from pipelines.email.schedules import email_sends_daily_schedule


def build(email_requests: QueueSpec) -> dg.Definitions:
    """`email_requests`: the queue's spec as the code location made it (jobs.email_requests_spec,
    with delivery tracking's re-linking of orphan events as its hook: pipelines/queues.py)."""
    return dg.Definitions.merge(
        queue_consumer_defs(email_requests),
        dg.Definitions(assets=[email_messages, email_sends_daily], jobs=[email_sends_daily_job],
                       schedules=[email_sends_daily_schedule]),
    )
