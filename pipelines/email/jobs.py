"""send_email_batch_job: drain the email-requests queue into sends and ledger rows (the consumer
kit's factory makes the op, the job and the email_requests_sensor doorbell); email_sends_daily_job."""

import math
from functools import partial

import dagster as dg
from pydantic import Field

from pipelines.common.factory import DrainConfig, QueueSpec
from pipelines.email.assets import email_sends_daily
from pipelines.email.consumer import SOURCE, EmailRequestConsumer
from pipelines.email.builder import Builder
from pipelines.email.ledger import EMAIL_MESSAGES, MessageIdsRecorded
from pipelines.email.sending import RetryPolicy, Sender

# Threads needed to reach a rate R when one provider call takes about this long (with room
# for slow calls: a pool that is all busy loses slots).
ASSUMED_CALL_SECONDS = 0.1


class SendEmailBatchConfig(DrainConfig):
    max_messages: int = Field(default=5000, description="Requests drained per run at most.")
    batch_size: int = Field(default=200, description="Requests per commit-then-delete batch.")
    inflight_window: int = Field(default=100, description="Messages handed to the transport before their "
                                 "outcomes are committed; at most two windows are in flight.")
    concurrency: int = Field(default=0, description="Sending threads; 0 = enough for the provider's rate (min 8).")
    max_send_rate: float = Field(default=0.0, description="Sends per second; 0 = the transport's "
                                 "(SES_MAX_SEND_RATE, else the SES account quota; none for SMTP).")
    max_attempts: int = Field(default=5, description="Transport calls per message on transient failures.")


def threads_for(rate: float | None, configured: int) -> int:
    if configured > 0:
        return configured
    if not rate:
        return 8
    return max(8, min(64, math.ceil(rate * ASSUMED_CALL_SECONDS)))


def make_consumer(context, config: SendEmailBatchConfig | None,
                  on_recorded: MessageIdsRecorded | None = None) -> EmailRequestConsumer:
    config = config or SendEmailBatchConfig()
    resources = context.resources
    transport = resources.email_sender.get_transport()
    rate = config.max_send_rate or None
    if rate is None:
        try:
            rate = transport.max_send_rate()
        except Exception as exc:  # noqa: BLE001 - no quota readable: send unthrottled, say so
            context.log.warning(f"could not read the send quota ({type(exc).__name__}); sending without a rate limit")
    threads = threads_for(rate, config.concurrency)
    settings = resources.email_settings
    consumer = EmailRequestConsumer(
        Builder(resources.templates.directory, site_name=settings.site_name, site_url=settings.site_url),
        Sender(transport, concurrency=threads, rate=rate, policy=RetryPolicy(max_attempts=config.max_attempts)),
        default_sender=settings.sender, transport_name=resources.email_sender.transport,
        inflight_window=config.inflight_window, on_recorded=on_recorded)
    consumer.metadata.update(send_rate_limit=rate or 0.0, threads=threads, transport=resources.email_sender.transport)
    return consumer


def email_requests_spec(on_recorded: MessageIdsRecorded | None) -> QueueSpec:
    """The email-requests queue. `on_recorded` is told of each window's message ids, in the
    transaction that records them (the code location passes delivery's re-linking)."""
    return QueueSpec(
        source=SOURCE, make_consumer=partial(make_consumer, on_recorded=on_recorded),
        op_name="send_email_batch", job_name="send_email_batch_job", sensor_name="email_requests_sensor",
        config_class=SendEmailBatchConfig, resource_keys=frozenset({"email_sender", "templates", "email_settings"}),
        job_description="Drains email-requests: parse, quarantine bad requests, render, apply skip rules, "
                        "claim outbox rows, send, record; then delete the messages. Run metadata: received, "
                        "quarantined, sent, skipped_<reason>, failed. Quarantined requests keep their (redacted) "
                        "body and reason in the quarantine table: fix the sender, they are not retried.",
        sensor_description="Doorbell for send_email_batch_job: reads the depth of email-requests and this "
                           "instance's runs, never a message. Requests one run when requests wait and no run of "
                           "the job is in flight. If requests pile up while it skips, look at the in-flight run.",
        job_tags={},
        ledgers=(EMAIL_MESSAGES,),
    )


email_sends_daily_job = dg.define_asset_job(
    "email_sends_daily_job", selection=[email_sends_daily],
    description="Rebuilds email_sends_daily from the email_messages ledger and runs its checks.")
