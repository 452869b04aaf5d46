"""Email dispatch definitions (placeholder until the dispatch work lands)."""

import dagster as dg

defs = dg.Definitions()
