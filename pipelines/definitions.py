"""The code location: each domain's Definitions, merged, plus the shared resources and executor.

Domains meet at this level and nowhere else: delivery tracking re-links the SES events that
overtook a send once dispatch records the send's message id (dispatch's `on_recorded` hook, given
to the email-requests spec in pipelines/queues.py).
"""

import dagster as dg

from pipelines.automation import automation_sensor
from pipelines.billing import definitions as billing
from pipelines.common.ledgers import quarantine_spec
from pipelines.email import definitions as email
from pipelines.email_delivery import definitions as email_delivery
from pipelines.executors import mailroom_executor
from pipelines.queues import EMAIL_REQUESTS
from pipelines.resource_defs import build_resources

defs = dg.Definitions.merge(
    email.build(EMAIL_REQUESTS),
    email_delivery.defs,
    billing.defs,
    dg.Definitions(assets=[quarantine_spec], sensors=[automation_sensor], resources=build_resources(),
                   executor=mailroom_executor),
)
