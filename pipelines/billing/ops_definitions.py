"""The billing operations' Dagster definitions (merged with billing-core's into billing's)."""

import dagster as dg

from pipelines.billing.ops_assets import (OPS_ASSETS, OPS_CHECKS, billing_reports_job,
                                          billing_reports_schedule)
from pipelines.billing.ops_jobs import OPS_JOBS
from pipelines.billing.ops_schedules import OPS_SCHEDULES

defs = dg.Definitions(assets=OPS_ASSETS, asset_checks=OPS_CHECKS, jobs=[*OPS_JOBS, billing_reports_job],
                      schedules=[*OPS_SCHEDULES, billing_reports_schedule])
