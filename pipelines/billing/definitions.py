"""Billing: the stripe-events drain and replay, the doorbell sensor, the operator and scheduled jobs,
the `billing` asset group and its checks. Resources are wired in pipelines/resource_defs.py."""

import dagster as dg

from pipelines.billing.assets import BILLING_ASSETS, REPORT_ASSETS
from pipelines.billing.checks import BILLING_CHECKS
from pipelines.billing.jobs import JOBS, stripe_queue_defs
from pipelines.billing.schedules import SCHEDULES

defs = dg.Definitions.merge(
    stripe_queue_defs,
    dg.Definitions(assets=[*BILLING_ASSETS, *REPORT_ASSETS], asset_checks=BILLING_CHECKS, jobs=JOBS,
                   schedules=SCHEDULES),
)
