"""Delivery tracking: the ses-notifications drain and replay (jobs, ops, doorbell sensor),
retention, the reporting assets and their checks. Resources are wired in pipelines/resource_defs.py."""

import dagster as dg

from pipelines.email_delivery.assets import (email_addresses, email_delivery_daily, email_events, email_status,
                                             ses_reputation)
from pipelines.common.factory import queue_consumer_defs
from pipelines.email_delivery.jobs import SES_NOTIFICATIONS, ses_cleanup_job
from pipelines.email_delivery.schedules import ses_cleanup_schedule

defs = dg.Definitions.merge(
    queue_consumer_defs(SES_NOTIFICATIONS),
    dg.Definitions(assets=[email_events, email_addresses, email_status, email_delivery_daily, ses_reputation],
                   jobs=[ses_cleanup_job],
                   schedules=[ses_cleanup_schedule]),
)
