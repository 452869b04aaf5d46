"""Every queue the code location drains, as its QueueSpec (pipelines/common/factory.py).

The queue resources (resource_defs.py) and the local topology's queues (devstack/topology.py)
are derived from this list; each domain's definitions.py makes its queue's jobs and sensor.
"""

from pipelines.billing.jobs import STRIPE_EVENTS
from pipelines.common.factory import QueueSpec
from pipelines.email.jobs import email_requests_spec
from pipelines.email_delivery.ingest import relink_orphans
from pipelines.email_delivery.jobs import SES_NOTIFICATIONS

# Dispatch tells delivery tracking of each recorded message id (the domains meet at this level).
EMAIL_REQUESTS = email_requests_spec(on_recorded=relink_orphans)

QUEUE_SPECS: tuple[QueueSpec, ...] = (EMAIL_REQUESTS, SES_NOTIFICATIONS, STRIPE_EVENTS)
