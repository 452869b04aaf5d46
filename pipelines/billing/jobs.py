"""ingest_stripe_events_job and replay_stripe_quarantine_job (from the consumer kit's factory),
and stripe_events_sensor, its doorbell. The consumer is built from the `stripe` resource: the
envelope and tenant settings, and the client that re-retrieves objects at the pinned version."""

from pipelines.billing.assets import report_tables
from pipelines.billing.consumer import StripeEventConsumer
from pipelines.billing.envelope import EnvelopeSettings
from pipelines.billing.ingest import SOURCE, IngestSettings
from pipelines.billing.notices import WithNotices
from pipelines.billing.retrieve import StripeRetriever
from pipelines.common.factory import DrainConfig as QueueDrainConfig, queue_consumer_defs
from resources.stripe_client import StripeResource


class DrainConfig(QueueDrainConfig):
    max_messages: int = 50_000
    batch_size: int = 1_000
    wait_seconds: int = 2


def ingest_settings(stripe: StripeResource) -> IngestSettings:
    return IngestSettings(
        EnvelopeSettings.from_strings(stripe.eventbridge_sources, stripe.webhook_secret,
                                      stripe.webhook_tolerance_seconds),
        billing_service=stripe.billing_service or None, domain=stripe.domain or None)


def make_consumer(context) -> WithNotices:
    stripe: StripeResource = context.resources.stripe
    # WithNotices: after each commit, the batch's dunning notices go to email-requests (notices.py)
    return WithNotices(StripeEventConsumer(ingest_settings(stripe), StripeRetriever(stripe.client())),
                       context.resources.email_requests_queue)


stripe_queue_defs = queue_consumer_defs(
    source=SOURCE, queue_resource_key="stripe_events_queue", make_consumer=make_consumer,
    op_name="drain_stripe_events", job_name="ingest_stripe_events_job", sensor_name="stripe_events_sensor",
    replay_op_name="replay_stripe_quarantine", replay_job_name="replay_stripe_quarantine_job",
    config_class=DrainConfig, resource_keys={"stripe", "email_requests_queue"}, connect_config={"threads": 1},
    after_run=report_tables,
    op_description="Drains stripe-events: open and verify each envelope, apply the events in Stripe's "
                   "order (re-retrieving stale or foreign-version objects), commit, then delete.",
    job_description="Drains the stripe-events queue into stripe_events and the stripe_* tables.",
    replay_description="Replays quarantined Stripe events after a fix (a source allowed, a secret, a handler).",
)
