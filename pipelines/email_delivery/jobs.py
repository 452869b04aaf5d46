"""Jobs: drain the ses-notifications queue and replay its quarantine (from the consumer kit's
factory), and clean up old rows."""

from datetime import datetime, timezone

import dagster as dg

from pipelines.common.factory import DrainConfig as QueueDrainConfig, QueueSpec
from pipelines.common.sns.cert_store import shared_cert_store
from pipelines.common.sns.verify import SnsVerifier
from pipelines.email.ledger import EMAIL_MESSAGES
from pipelines.email_delivery.address_changes import publish_address_changes
from pipelines.email_delivery.assets import EMAIL_ADDRESSES, EMAIL_EVENTS
from pipelines.email_delivery.cleanup import cleanup
from pipelines.email_delivery.consumer import SOURCE, SesNotificationConsumer
from pipelines.email_delivery.heap import freeze_long_lived
from pipelines.email_delivery.parallel import PooledSesNotificationConsumer, auto_workers
from pipelines.store_resource import MailroomStore


class DrainConfig(QueueDrainConfig):
    max_messages: int = 50_000
    # Messages stay in flight until their batch commits: a batch must fill and commit well within
    # the queue's visibility timeout (SQS default 30 s; a receive of 10 takes ~20-50 ms). The kit
    # also flushes a batch early once its oldest message has used half of that timeout.
    batch_size: int = 2_000
    wait_seconds: int = 2
    # Worker processes verifying signatures while the run receives and writes; 0 verifies inline;
    # -1 picks one per CPU, at most 4 (parallel.auto_workers).
    verify_workers: int = -1


def make_consumer(context, config: DrainConfig | None) -> SesNotificationConsumer | PooledSesNotificationConsumer:
    """Verifying in worker processes as `verify_workers` says; a replay (no drain config) inline."""
    settings = context.resources.sns_verifier
    verifier = SnsVerifier(settings.topics, shared_cert_store(settings.cert_dir),
                           max_age_seconds=settings.max_age_seconds)
    consumer = SesNotificationConsumer(verifier, accept_raw=settings.raw_accepted,
                                       confirm=context.resources.sns.confirm_subscription)
    workers = 0 if config is None else auto_workers() if config.verify_workers < 0 else config.verify_workers
    if config is not None:
        freeze_long_lived()
    return PooledSesNotificationConsumer(consumer, workers) if workers > 0 else consumer


def publish_changes(context) -> dict[str, int]:
    """Copy new address_status_changes to the outbound queue, if one is configured."""
    queue = context.resources.address_changes_queue
    if not queue.queue_name:
        return {"address_changes_published": 0}
    with context.resources.store.ledgers().transaction() as conn:
        return {"address_changes_published": publish_address_changes(conn, queue.send)}


SES_NOTIFICATIONS = QueueSpec(
    source=SOURCE, make_consumer=make_consumer,
    op_name="drain_ses_notifications", job_name="ingest_ses_notifications_job",
    sensor_name="ses_notifications_sensor",
    replay_op_name="replay_ses_quarantine", replay_job_name="replay_ses_quarantine_job",
    config_class=DrainConfig, resource_keys=frozenset({"sns", "sns_verifier", "address_changes_queue"}),
    # One DuckDB thread: a batch's statements are small, so more threads mostly add scheduling
    # overhead (~20% of the write time measured), and the verify workers want the other cores.
    connect_config={"threads": 1},
    after_run=publish_changes,
    ledgers=(EMAIL_EVENTS, EMAIL_MESSAGES, EMAIL_ADDRESSES),
    op_description="Drains ses-notifications: verify, parse, apply; commit, then delete.",
    job_description="Drains the ses-notifications queue into email_events, email_messages, email_addresses: "
                    "verifies each SNS signature, applies bounces, complaints and deliveries, records "
                    "address health. Run metadata: received, events_new, events_duplicate, orphans, "
                    "quarantined. Quarantined notifications (bad signature, unknown topic, unparseable) keep "
                    "their body and reason: docs/operations.md, 'A signature check fails'.",
    replay_description="Replays quarantined SES notifications after a fix (a new topic in "
                       "SNS_TOPIC_ALLOWLIST, a parser fix); rows that still fail stay quarantined.",
    sensor_description="Doorbell for ingest_ses_notifications_job: reads the depth of ses-notifications and "
                       "this instance's runs, never a message. Requests one run when notifications wait and "
                       "no run of the job is in flight.",
)


class CleanupConfig(dg.Config):
    final_days: int = 14
    all_days: int = 90


@dg.op(pool="duckdb", description="Deletes old messages and their events (Warehouse's retention).")
def cleanup_ses_messages(context: dg.OpExecutionContext, config: CleanupConfig, store: MailroomStore):
    with store.ledgers().transaction() as conn:
        res = cleanup(conn, datetime.now(timezone.utc), final_days=config.final_days, all_days=config.all_days)
    context.log.info(f"cleanup: {res.messages} messages, {res.events} events deleted")
    return dg.Output(None, metadata={"messages_deleted": res.messages, "events_deleted": res.events})


@dg.job(description="Daily retention of email_messages and email_events (Warehouse's): sent/delivered "
                    "messages after 14 days, everything after 90, with their events. Metadata: rows deleted.")
def ses_cleanup_job():
    cleanup_ses_messages()
