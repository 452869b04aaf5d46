"""Email dispatch: the email-requests drain (job, op, doorbell sensor), the daily sends asset,
its checks, job and schedule. Resources are wired in pipelines/resource_defs.py."""

import dagster as dg

from pipelines.email.assets import email_messages, email_sends_daily
from pipelines.common.factory import queue_consumer_defs
from pipelines.email.jobs import email_requests_spec, email_sends_daily_job
from pipelines.email.ledger import MessageIdsRecorded
from pipelines.email.schedules import email_sends_daily_schedule


def build(on_recorded: MessageIdsRecorded | None) -> dg.Definitions:
    """`on_recorded`: told of the message ids each send window records (pipelines/email/ledger.py);
    the code location passes delivery tracking's re-linking of orphan events."""
    return dg.Definitions.merge(
        queue_consumer_defs(email_requests_spec(on_recorded)),
        dg.Definitions(assets=[email_messages, email_sends_daily], jobs=[email_sends_daily_job],
                       schedules=[email_sends_daily_schedule]),
    )
