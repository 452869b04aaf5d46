"""Billing: the stripe-events drain and replay, the doorbell sensor, the operator and scheduled jobs,
the `billing` asset group and its checks. Resources are wired in pipelines/resource_defs.py."""

import dagster as dg

from pipelines.billing.assets import BILLING_ASSETS, REPORT_ASSETS
from pipelines.billing.checks import BILLING_CHECKS
from pipelines.billing.jobs import JOBS, STRIPE_EVENTS
from pipelines.billing.schedules import SCHEDULES
from pipelines.common.factory import queue_consumer_defs

defs = dg.Definitions.merge(
    queue_consumer_defs(STRIPE_EVENTS),
    dg.Definitions(assets=[*BILLING_ASSETS, *REPORT_ASSETS], asset_checks=BILLING_CHECKS, jobs=JOBS,
                   schedules=SCHEDULES),
)
