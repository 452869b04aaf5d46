"""The code location: per-domain definitions plus the shared resources."""

import dagster as dg

from pipelines.email import definitions as email
from pipelines.email.ses import definitions as ses
from pipelines.resource_defs import build_resources

defs = dg.Definitions.merge(
    email.defs,
    ses.defs,
    dg.Definitions(resources=build_resources()),
)
