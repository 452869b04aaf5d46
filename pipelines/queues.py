"""Every queue the code location drains, as its QueueSpec (pipelines/common/factory.py).

The queue resources (resource_defs.py) and the local topology's queues (devstack/topology.py)
are derived from this list; each domain's definitions.py makes its queue's jobs and sensor.
"""

from pipelines.billing.jobs import STRIPE_EVENTS
from pipelines.common.factory import QueueSpec
from pipelines.email.jobs import EMAIL_REQUESTS
from pipelines.email_delivery.jobs import SES_NOTIFICATIONS

QUEUE_SPECS: tuple[QueueSpec, ...] = (EMAIL_REQUESTS, SES_NOTIFICATIONS, STRIPE_EVENTS)
