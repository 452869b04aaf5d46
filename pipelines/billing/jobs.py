"""Billing's jobs.

- ingest_stripe_events_job and replay_stripe_quarantine_job (STRIPE_EVENTS, the queue's QueueSpec),
  with stripe_events_sensor, their doorbell. The consumer is built from the `stripe` resource:
  the envelope and tenant settings, and the client that re-retrieves objects at the pinned version.
- Operator jobs (typed config; the run log is the audit trail): refund, cancel, resync. Config is
  checked before any Stripe call: a malformed id or amount fails the run at once naming the
  field; an id Stripe does not know fails naming the id.
- Scheduled jobs: seat sync, reconciliation, subscription-required notices, the reports.
Ops that write DuckDB take the `duckdb` pool.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import dagster as dg
import stripe
from pydantic import Field

from pipelines.billing import payments, subscriptions
from pipelines.billing.assets import DRAIN_TABLES, REPORT_ASSETS, table_rows_metadata
from pipelines.billing.consumer import StripeEventConsumer
from pipelines.billing.envelope import EnvelopeSettings
from pipelines.billing.ingest import SOURCE, IngestSettings
from pipelines.billing.notices import send_subscription_required
from pipelines.billing.operator_checks import id_problem, reconcile_mode_problem, refund_problem
from pipelines.billing.reconcile import Reconciler
from pipelines.billing.reconcile_tables import CONNECT_CONFIG, BillingTables
from pipelines.billing.retrieve import StripeRetriever
from pipelines.billing.seats import seat_targets, sync_seats
from pipelines.billing.vocab import ReconcileMode, SubscriptionStatus
from pipelines.common.factory import DrainConfig as QueueDrainConfig, QueueSpec
from resources.aws import SQSQueueResource
from pipelines.store_resource import MailroomStore
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


def make_consumer(context, config: DrainConfig | None) -> StripeEventConsumer:
    """After each commit, the batch's dunning notices go to email-requests (the consumer's after_commit)."""
    stripe: StripeResource = context.resources.stripe
    return StripeEventConsumer(ingest_settings(stripe), StripeRetriever(stripe.client()),
                               notices=context.resources.email_requests_queue)


STRIPE_EVENTS = QueueSpec(
    source=SOURCE, make_consumer=make_consumer,
    op_name="drain_stripe_events", job_name="ingest_stripe_events_job", sensor_name="stripe_events_sensor",
    replay_op_name="replay_stripe_quarantine", replay_job_name="replay_stripe_quarantine_job",
    config_class=DrainConfig, resource_keys=frozenset({"stripe", "email_requests_queue"}),
    connect_config={"threads": 1}, ledgers=tuple(DRAIN_TABLES), after_run=table_rows_metadata,
    op_description="Drains stripe-events: open and verify each envelope, apply the events in Stripe's "
                   "order (re-retrieving stale or foreign-version objects), commit, then delete.",
    job_description="Drains the stripe-events queue into stripe_events and the stripe_* tables.",
    replay_description="Replays quarantined Stripe events after a fix (a source allowed, a secret, a handler).",
)


def _refuse(problem: str | None) -> None:
    if problem:
        raise dg.Failure(description=f"config {problem}")



@contextmanager
def stripe_errors(what: str) -> Iterator[None]:
    """Stripe's refusal as a failure that names the object and the reason (never the key)."""
    try:
        yield
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            raise dg.Failure(description=f"{what}: no such object in Stripe") from None
        raise dg.Failure(description=f"{what}: Stripe refused ({exc.code or exc.http_status}): "
                                     f"{exc.user_message or ''}") from None
    except (payments.PaymentError, subscriptions.SubscriptionError) as exc:
        raise dg.Failure(description=str(exc)) from None


RECONCILE_HOLD_SECONDS = 1.0


@contextmanager
def reconciling(stripe_res: StripeResource, db: MailroomStore, run_id: str, log=None) -> Iterator[Reconciler]:
    """A Reconciler whose transactions share one connection for up to 1 s at a time (Store): a full
    sweep commits a page at a time, and reopening per page would cost more than the page; an ad-hoc
    reader waits at most about a second for the file (pipelines.query retries)."""
    with db.ledgers(config=CONNECT_CONFIG, hold_seconds=RECONCILE_HOLD_SECONDS) as store:
        yield Reconciler(stripe_res.client(), store.transaction, BillingTables(), run_id=run_id, log=log)


# --- operator actions --------------------------------------------------------------------------

class RefundConfig(dg.Config):
    payment_id: str = Field(description="The PaymentIntent (pi_...) or charge (ch_...) to refund.")
    amount: int | None = Field(default=None, description="Minor units (cents); empty refunds in full.")
    reason: str | None = Field(default=None, description="duplicate, fraudulent or requested_by_customer.")


@dg.op(pool="duckdb", description="Refunds a payment in full or in part, then records it in the tables.")
def refund_payment(context: dg.OpExecutionContext, config: RefundConfig, stripe: StripeResource,
                   store: MailroomStore) -> dg.Output[None]:
    _refuse(refund_problem(config.payment_id, config.amount, config.reason))
    client = stripe.client()
    with stripe_errors(f"payment {config.payment_id}"):
        pi_id = config.payment_id
        if pi_id.startswith("ch_"):
            pi_id = client.v1.charges.retrieve(pi_id).to_dict().get("payment_intent") or ""
            if not pi_id:
                raise dg.Failure(description=f"payment {config.payment_id}: the charge has no PaymentIntent")
        refund = payments.refund(client, pi_id, amount=config.amount, reason=config.reason, scope=context.run_id)
    with reconciling(stripe, store, context.run_id) as rec:
        report = rec.resync({"payment_intent": [pi_id]})
    context.log.info(f"refund {refund['id']} of {refund['amount']} {refund['currency']} for {pi_id}: {refund['status']}")
    return dg.Output(None, metadata={"refund_id": refund["id"], "payment_intent": pi_id,
                                     "amount": refund["amount"], "currency": refund["currency"],
                                     "status": refund["status"], **report.as_metadata()})


class CancelConfig(dg.Config):
    subscription_id: str = Field(description="sub_...")
    at_period_end: bool = Field(default=False, description="Cancel when the paid period ends (can be resumed).")


@dg.op(pool="duckdb", description="Cancels a subscription now or at period end, then records it in the tables.")
def cancel_subscription(context: dg.OpExecutionContext, config: CancelConfig, stripe: StripeResource,
                        store: MailroomStore) -> dg.Output[None]:
    _refuse(id_problem("subscription", "subscription_id", config.subscription_id))
    client = stripe.client()
    with stripe_errors(f"subscription {config.subscription_id}"):
        sub = client.v1.subscriptions.retrieve(config.subscription_id)
        if sub["status"] == SubscriptionStatus.CANCELED:
            raise dg.Failure(description=f"subscription {config.subscription_id} is already canceled")
        sub = subscriptions.cancel(client, config.subscription_id, at_period_end=config.at_period_end,
                                   scope=context.run_id).to_dict()
    with reconciling(stripe, store, context.run_id) as rec:
        report = rec.resync({"subscription": [config.subscription_id]})
    context.log.info(f"subscription {sub['id']}: status {sub['status']}, "
                     f"cancel_at_period_end {sub.get('cancel_at_period_end')}")
    return dg.Output(None, metadata={"subscription_id": sub["id"], "status": sub["status"],
                                     "cancel_at_period_end": bool(sub.get("cancel_at_period_end")),
                                     **report.as_metadata()})


class ResyncConfig(dg.Config):
    customer_id: str = Field(description="cus_...: re-read the customer and everything it owns from Stripe.")


@dg.op(pool="duckdb", description="Re-reads one customer, its subscriptions, invoices and payments from Stripe "
                                 "and repairs their rows (differences go to billing_drift).")
def resync_customer(context: dg.OpExecutionContext, config: ResyncConfig, stripe: StripeResource,
                    store: MailroomStore) -> dg.Output[None]:
    _refuse(id_problem("customer", "customer_id", config.customer_id))
    with stripe_errors(f"customer {config.customer_id}"), \
            reconciling(stripe, store, context.run_id, log=context.log.info) as rec:
        report = rec.resync_customer(config.customer_id)
    context.log.info(f"customer {config.customer_id}: {sum(report.differences.values())} differences repaired")
    return dg.Output(None, metadata=report.as_metadata())


refund_payment_job = dg.GraphDefinition(name="refund_payment_job", node_defs=[refund_payment]).to_job(
    description="Operator action: refund a payment (config: payment_id, amount, reason).",
    tags={"billing": "operator"})
cancel_subscription_job = dg.GraphDefinition(name="cancel_subscription_job", node_defs=[cancel_subscription]).to_job(
    description="Operator action: cancel a subscription now or at period end.", tags={"billing": "operator"})
resync_customer_job = dg.GraphDefinition(name="resync_customer_job", node_defs=[resync_customer]).to_job(
    description="Operator action: re-read a customer and its objects from Stripe.", tags={"billing": "operator"})


# --- scheduled -------------------------------------------------------------------------------------

@dg.op(pool="duckdb", description="Sets each live subscription's seat count to its organisation's member count.")
def sync_seat_counts(context: dg.OpExecutionContext, stripe: StripeResource, store: MailroomStore) -> dg.Output[None]:
    with store.ledgers().read() as conn:
        targets = seat_targets(conn)
    report = sync_seats(stripe.client(), targets, scope=None, log=context.log.warning)
    for org, sub, before, after in report.changed:
        context.log.info(f"organisation {org}: {sub} seats {before} -> {after}")
    if report.changed:
        with reconciling(stripe, store, context.run_id) as rec:
            rec.resync({"subscription": [c[1] for c in report.changed]})
    if report.failed:
        # the others were updated; the run fails so the failures are seen
        raise dg.Failure(description=f"seat sync failed for {len(report.failed)} organisation(s): "
                                     + "; ".join(f"{o} ({s}): {e}" for o, s, e in report.failed[:20]),
                         metadata=report.as_metadata())
    return dg.Output(None, metadata=report.as_metadata())


seat_sync_job = dg.GraphDefinition(name="seat_sync_job", node_defs=[sync_seat_counts]).to_job(
    description="Sets each live subscription's seat quantity in Stripe to its organisation's member count.")


class ReconcileConfig(dg.Config):
    mode: str = Field(default="incremental", description="incremental (Events API from the cursor) or full (sweep).")


@dg.op(pool="duckdb", description="Compares Stripe with the billing tables, repairs them, records drift.")
def reconcile_billing(context: dg.OpExecutionContext, config: ReconcileConfig, stripe: StripeResource,
                      store: MailroomStore) -> dg.Output[None]:
    _refuse(reconcile_mode_problem(config.mode))
    with reconciling(stripe, store, context.run_id, log=context.log.info) as rec:
        report = rec.full_sweep() if config.mode == ReconcileMode.FULL else rec.incremental()
    if report.fallback_reason:
        context.log.warning(f"incremental reconciliation fell back to a full sweep: {report.fallback_reason}")
    for d in report.unrepaired[:50]:
        context.log.error(f"unrepaired {d.object_type} {d.object_id} {d.field}: {d.reason}")
    return dg.Output(None, metadata=report.as_metadata())


reconcile_billing_job = dg.GraphDefinition(name="reconcile_billing_job", node_defs=[reconcile_billing]).to_job(
    description="Reconciliation: incremental by default, config mode=full for a sweep.")


class NoticeConfig(dg.Config):
    grace_days: int = Field(default=30, description="Days a company organisation may go without a subscription.")


@dg.op(pool="duckdb", description="Company organisations past the grace period without an active subscription "
                                 "get organization-subscription-required (30-day repeat window).")
def notify_subscription_required(context: dg.OpExecutionContext, config: NoticeConfig, store: MailroomStore,
                                 email_requests_queue: SQSQueueResource) -> dg.Output[None]:
    report = send_subscription_required(store.connect, email_requests_queue, datetime.now(UTC),
                                        grace_days=config.grace_days)
    return dg.Output(None, metadata=report.as_metadata())


organization_subscription_notice_job = dg.GraphDefinition(
    name="organization_subscription_notice_job", node_defs=[notify_subscription_required]).to_job(
    description="Sends organization-subscription-required to company organisations past their grace "
                "period without an active subscription.")

billing_reports_job = dg.define_asset_job("billing_reports_job", selection=dg.AssetSelection.assets(*REPORT_ASSETS),
                                          description="Materializes subscriptions_current, "
                                                      "billing_daily and billing_leaks, and runs "
                                                      "their checks.")

JOBS = [refund_payment_job, cancel_subscription_job, resync_customer_job, seat_sync_job, reconcile_billing_job,
        organization_subscription_notice_job, billing_reports_job]
