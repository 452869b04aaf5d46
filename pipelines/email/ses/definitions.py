"""SES notification definitions (placeholder until the SES work lands)."""

import dagster as dg

defs = dg.Definitions()
