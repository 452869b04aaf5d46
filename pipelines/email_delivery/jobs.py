"""Jobs: drain the ses-notifications queue, replay quarantine, clean up old rows."""

from contextlib import ExitStack
from datetime import datetime, timezone

import dagster as dg

from pipelines.common.drain import drain
from pipelines.common.sns.cert_store import shared_cert_store
from pipelines.common.sns.verify import SnsVerifier
from pipelines.email_delivery.address_changes import publish_address_changes
from pipelines.email_delivery.cleanup import cleanup
from pipelines.store.held_connection import HeldConnection
from pipelines.email_delivery.ingest import IngestResult, Ingestor
from pipelines.email_delivery.parallel import PreparePool, PreparingQueue, auto_workers
from pipelines.email_delivery.replay import replay
from resources.aws import SNSResource, SQSQueueResource
from resources.duckdb import DuckDBResource
from resources.sns_verifier import SnsVerifierResource


class DrainConfig(dg.Config):
    max_messages: int = 50_000
    max_seconds: float = 240.0
    # Messages stay in flight until their batch commits: a batch must fill and commit well within
    # the queue's visibility timeout (SQS default 30 s; a receive of 10 takes ~20-50 ms).
    batch_size: int = 2_000
    wait_seconds: int = 2
    # Worker processes verifying signatures while the run receives and writes; 0 verifies inline;
    # -1 picks one per CPU, at most 4 (parallel.auto_workers).
    verify_workers: int = -1
    # One DuckDB connection serves consecutive batches for at most this long, then readers get a turn.
    connection_hold_seconds: float = 10.0


def _ingestor(sns_verifier: SnsVerifierResource, sns: SNSResource) -> Ingestor:
    verifier = SnsVerifier(sns_verifier.topics, shared_cert_store(sns_verifier.cert_dir),
                           max_age_seconds=sns_verifier.max_age_seconds)
    return Ingestor(verifier, accept_raw=sns_verifier.raw_accepted, confirm=sns.confirm_subscription)


def _publish(duckdb: DuckDBResource, queue: SQSQueueResource) -> int:
    if not queue.queue_name:
        return 0
    with duckdb.connect() as conn:
        return publish_address_changes(conn, queue.send)


def _metadata(result: IngestResult, **extra) -> dict:
    return {**{k: dg.MetadataValue.int(v) for k, v in vars(result).items()}, **extra}


@dg.op(pool="duckdb", description="Drains ses-notifications: verify, parse, apply; commit, then delete.")
def drain_ses_notifications(context: dg.OpExecutionContext, config: DrainConfig, duckdb: DuckDBResource,
                            ses_notifications_queue: SQSQueueResource, sns: SNSResource,
                            sns_verifier: SnsVerifierResource, address_changes_queue: SQSQueueResource):
    ingestor = _ingestor(sns_verifier, sns)
    total = IngestResult()
    with ExitStack() as stack:
        queue, prepare = ses_notifications_queue, ingestor.prepare
        workers = auto_workers() if config.verify_workers < 0 else config.verify_workers
        if workers > 0:
            pool = stack.enter_context(PreparePool(ingestor, workers))
            queue, prepare = PreparingQueue(ses_notifications_queue, pool), pool.prepare
        held = stack.enter_context(HeldConnection(duckdb, config.connection_hold_seconds))

        def handle(batch):
            prepared = prepare(batch)
            total.add(ingestor.commit(held.get(), prepared))

        stats = drain(queue, handle, max_messages=config.max_messages, max_seconds=config.max_seconds,
                      batch_size=config.batch_size, wait_seconds=config.wait_seconds)
    published = _publish(duckdb, address_changes_queue)
    context.log.info(f"ses-notifications: {stats.received} received, {total.events_new} new events, "
                     f"{total.quarantined} quarantined, {stats.sqs_calls} SQS calls")
    return dg.Output(None, metadata=_metadata(
        total, received=stats.received, deleted=stats.deleted, delete_failures=stats.delete_failures,
        sqs_calls=stats.sqs_calls, seconds=dg.MetadataValue.float(round(stats.seconds, 3)),
        address_changes_published=published))


@dg.job(description="Drains the ses-notifications queue into email_events, email_messages, email_addresses.",
        tags={"queue": "ses-notifications"})
def ingest_ses_notifications_job():
    drain_ses_notifications()


class ReplayConfig(dg.Config):
    limit: int = 10_000


@dg.op(pool="duckdb", description="Runs quarantined ses-notifications rows through ingestion again.")
def replay_ses_quarantine(context: dg.OpExecutionContext, config: ReplayConfig, duckdb: DuckDBResource,
                          sns: SNSResource, sns_verifier: SnsVerifierResource,
                          address_changes_queue: SQSQueueResource):
    with duckdb.connect() as conn:
        result, still_failing = replay(conn, _ingestor(sns_verifier, sns), config.limit)
    published = _publish(duckdb, address_changes_queue)
    context.log.info(f"replayed: {result.messages} rows, {still_failing} still failing")
    return dg.Output(None, metadata=_metadata(result, still_failing=still_failing,
                                              address_changes_published=published))


@dg.job(description="Replays quarantined SES notifications after a fix.")
def replay_ses_quarantine_job():
    replay_ses_quarantine()


class CleanupConfig(dg.Config):
    final_days: int = 14
    all_days: int = 90


@dg.op(pool="duckdb", description="Deletes old messages and their events (Warehouse's retention).")
def cleanup_ses_messages(context: dg.OpExecutionContext, config: CleanupConfig, duckdb: DuckDBResource):
    with duckdb.connect() as conn:
        res = cleanup(conn, datetime.now(timezone.utc), final_days=config.final_days, all_days=config.all_days)
    context.log.info(f"cleanup: {res.messages} messages, {res.events} events deleted")
    return dg.Output(None, metadata={"messages_deleted": res.messages, "events_deleted": res.events})


@dg.job(description="Daily retention of email_messages and email_events.")
def ses_cleanup_job():
    cleanup_ses_messages()
