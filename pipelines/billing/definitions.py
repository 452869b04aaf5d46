"""Billing: the stripe-events drain and replay, the doorbell sensor, the `billing` asset group
and its checks. Resources are wired in pipelines/resource_defs.py."""

import dagster as dg

from pipelines.billing.assets import BILLING_ASSETS
from pipelines.billing.checks import BILLING_CHECKS
from pipelines.billing.jobs import stripe_queue_defs

defs = dg.Definitions.merge(
    stripe_queue_defs,
    dg.Definitions(assets=BILLING_ASSETS, asset_checks=BILLING_CHECKS),
)
