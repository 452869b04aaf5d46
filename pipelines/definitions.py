"""The code location: per-domain definitions plus the shared resources and executor."""

import dagster as dg

from pipelines.email import definitions as email
from pipelines.email_delivery import definitions as ses
from pipelines.executors import mailroom_executor
from pipelines.resource_defs import build_resources

defs = dg.Definitions.merge(
    email.defs,
    ses.defs,
    dg.Definitions(resources=build_resources(), executor=mailroom_executor),
)
