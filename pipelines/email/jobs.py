"""send_email_batch_job: drain the email-requests queue into sends and ledger rows."""


import math

import dagster as dg
from pydantic import Field

from pipelines.common.drain import drain
from pipelines.email.batch import EmailBatchHandler
from pipelines.email.builder import Builder
from pipelines.email.sending import RetryPolicy, Sender
from resources.aws import SQSQueueResource
from resources.duckdb import DuckDBResource
from resources.email_sender import EmailSenderResource
from resources.email_settings import EmailSettingsResource
from resources.templates import TemplatesResource

# Threads needed to reach a rate R when one provider call takes about this long (with room
# for slow calls: a pool that is all busy loses slots).
ASSUMED_CALL_SECONDS = 0.1


class SendEmailBatchConfig(dg.Config):
    max_requests: int = Field(default=5000, description="Requests drained per run at most.")
    batch_size: int = Field(default=200, description="Requests per commit-then-delete batch.")
    max_seconds: float = Field(default=240.0, description="Stop draining after this long.")
    inflight_window: int = Field(default=100, description="Messages handed to the transport before their "
                                 "outcomes are committed; at most two windows are in flight.")
    concurrency: int = Field(default=0, description="Sending threads; 0 = enough for the provider's rate (min 8).")
    max_send_rate: float = Field(default=0.0, description="Sends per second; 0 = the transport's "
                                 "(SES_MAX_SEND_RATE, else the SES account quota; none for SMTP).")
    max_attempts: int = Field(default=5, description="Transport calls per message on transient failures.")
    wait_seconds: int = Field(default=1, description="SQS long-poll wait per receive.")


def threads_for(rate: float | None, configured: int) -> int:
    if configured > 0:
        return configured
    if not rate:
        return 8
    return max(8, min(64, math.ceil(rate * ASSUMED_CALL_SECONDS)))


@dg.op(pool="duckdb", tags={"queue": "email-requests"})
def send_email_batch(context: dg.OpExecutionContext, config: SendEmailBatchConfig, duckdb: DuckDBResource,
                     email_requests_queue: SQSQueueResource, email_sender: EmailSenderResource,
                     templates: TemplatesResource, email_settings: EmailSettingsResource) -> dg.Output[dict]:
    transport = email_sender.get_transport()
    rate = config.max_send_rate or None
    if rate is None:
        try:
            rate = transport.max_send_rate()
        except Exception as exc:  # noqa: BLE001 - no quota readable: send unthrottled, say so
            context.log.warning(f"could not read the send quota ({type(exc).__name__}); sending without a rate limit")
    threads = threads_for(rate, config.concurrency)
    builder = Builder(templates.directory, site_name=email_settings.site_name, site_url=email_settings.site_url)
    with Sender(transport, concurrency=threads, rate=rate,
                policy=RetryPolicy(max_attempts=config.max_attempts)) as sender:
        handler = EmailBatchHandler(duckdb.connect, builder, sender, default_sender=email_settings.sender,
                                    transport_name=email_sender.transport, inflight_window=config.inflight_window)
        stats = drain(email_requests_queue, handler.handle, max_messages=config.max_requests,
                      max_seconds=config.max_seconds, batch_size=config.batch_size,
                      wait_seconds=config.wait_seconds)
    meta = {**handler.stats.as_metadata(), "deleted": stats.deleted, "delete_failures": stats.delete_failures,
            "seconds": round(stats.seconds, 3), "send_rate_limit": rate or 0.0, "threads": threads,
            "transport": email_sender.transport}
    context.log.info(f"email batch: {meta}")
    return dg.Output(meta, metadata=meta)


@dg.job(description="Drains email-requests: parse, quarantine bad requests, render, apply skip rules, "
                    "claim outbox rows, send, record; then delete the messages.")
def send_email_batch_job():
    send_email_batch()
