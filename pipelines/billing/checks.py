"""Asset checks on the ingested billing tables and on the reports."""

import functools
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from pipelines.billing import reporting
from pipelines.billing.assets import REPORT_READS, billing_daily, billing_leaks, subscriptions_current
from pipelines.billing.vocab import DriftAction, EventOutcome
from pipelines.store_resource import MailroomStore

QUARANTINE_SHARE = 0.01  # of the last day's Stripe events
# A check runs whenever the table it looks at was updated: with its report asset's run, or, for the
# ingested tables, after each Stripe drain that landed rows (billing_reports_job runs them daily too).
RUN_ON_UPDATE = dg.AutomationCondition.eager()
billing_check = functools.partial(dg.asset_check, automation_condition=RUN_ON_UPDATE)


def orphan_subscriptions(conn) -> int:
    return conn.execute("SELECT count(*) FROM stripe_subscriptions s WHERE NOT EXISTS "
                        "(SELECT 1 FROM stripe_customers c WHERE c.customer_id = s.customer_id)").fetchone()[0]


def quarantine_share(conn, hours: int = 24) -> tuple[int, int]:
    return conn.execute(
        f"SELECT count(*) FILTER (WHERE outcome = '{EventOutcome.QUARANTINED}'), count(*) FROM stripe_events "
        f"WHERE received_at > now() - INTERVAL '{int(hours)} hours'").fetchone()


@billing_check(asset="stripe_subscriptions", description="Every subscription's customer is in stripe_customers "
                "(a miss means a customer's events were lost or are still quarantined). If it fails: look in "
                "quarantine for source stripe-events, replay it after a fix, or run resync_customer_job.")
def stripe_subscriptions_have_customers(store: MailroomStore) -> dg.AssetCheckResult:
    with store.ledgers().read() as conn:
        orphans = orphan_subscriptions(conn)
    return dg.AssetCheckResult(passed=orphans == 0, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"subscriptions_without_customer": orphans})


@billing_check(asset="stripe_events", description=f"At most {QUARANTINE_SHARE:.0%} of the last day's Stripe "
                "events were quarantined. If it fails: read the reasons in quarantine (source stripe-events), fix the "
                "cause (allow-list, webhook secret, handler) and run replay_stripe_quarantine_job. "
                "Drill: `python -m devstack incident poison` under make dev.")
def stripe_events_quarantine_share(store: MailroomStore) -> dg.AssetCheckResult:
    with store.ledgers().read() as conn:
        quarantined, total = quarantine_share(conn)
    share = quarantined / total if total else 0.0
    return dg.AssetCheckResult(passed=share <= QUARANTINE_SHARE,
                               metadata={"quarantined": quarantined, "events": total,
                                         "share": dg.MetadataValue.float(share)})


# ---- checks on the reports ----------------------------------------------------------------------------------------

def _listing(rows: list[tuple], limit: int = 20) -> dg.MetadataValue:
    return dg.MetadataValue.md("\n".join(f"- {' | '.join(str(c) for c in r)}" for r in rows[:limit]) or "none")


@billing_check(asset=subscriptions_current, description="Every live subscription has a customer and "
                                                         "an organisation. If it fails: the rows "
                                                         "listed lack a stripe_customers row or an "
                                                         "organization_id; run resync_customer_job "
                                                         "for the customer, or check that the "
                                                         "customer's metadata names its organisation.")
def live_subscriptions_have_customer_and_organisation(store: MailroomStore) -> dg.AssetCheckResult:
    with store.reports(reads=REPORT_READS) as conn:
        rows = reporting.live_without_customer_or_org(conn)
    return dg.AssetCheckResult(passed=not rows, metadata={"orphans": len(rows), "examples": _listing(rows)})


@billing_check(asset=subscriptions_current,
                description="No subscription is live in DuckDB that the last reconciliation saw "
                            "canceled in Stripe. If it fails: run reconcile_billing_job with "
                            "mode=full, then look at billing_drift for the rows it could not repair.")
def none_live_here_canceled_in_stripe(store: MailroomStore) -> dg.AssetCheckResult:
    with store.reports(reads=REPORT_READS) as conn:
        rows = reporting.active_here_canceled_in_stripe(conn)
    return dg.AssetCheckResult(passed=not rows, metadata={"subscriptions": len(rows), "examples": _listing(rows)})


@billing_check(asset=subscriptions_current, description="The last reconciliation left no difference "
                                                         "between Stripe and the tables unrepaired. "
                                                         "If it fails: read the unrepaired rows of "
                                                         "billing_drift (their reason says why), fix "
                                                         "the cause, and run reconcile_billing_job "
                                                         "again (mode=full). Repaired differences are "
                                                         "in billing_drift too, and do not fail it. "
                                                         "Drill: `python -m devstack incident "
                                                         "stripe-drift` under make dev.")
def drift_repaired(store: MailroomStore) -> dg.AssetCheckResult:
    with store.reports(reads=REPORT_READS) as conn:
        run_id, unrepaired = reporting.last_run_unrepaired(conn)
        rows = conn.execute("SELECT object_type, object_id, field, reason FROM billing_drift"
                            f" WHERE run_id = ? AND action = '{DriftAction.UNREPAIRED}' LIMIT 20", [run_id]).fetchall() if run_id else []
    return dg.AssetCheckResult(passed=unrepaired == 0,
                               metadata={"run_id": str(run_id), "unrepaired": unrepaired, "examples": _listing(rows)})


class FailureRateConfig(dg.Config):
    max_rate: float = Field(default=0.2, description="Largest acceptable share of failed PaymentIntents.")
    days: int = Field(default=7, description="Window, in days, of PaymentIntents looked at.")


@billing_check(asset=billing_daily, description="The share of failed PaymentIntents over the last "
                                                 "days stays under a threshold (config max_rate). If "
                                                 "it fails: look at failure_code in stripe_payments "
                                                 "for a common cause (an expired card wave, a Radar "
                                                 "rule, an outage).")
def payment_failure_rate_under_threshold(config: FailureRateConfig, store: MailroomStore) -> dg.AssetCheckResult:
    with store.reports(reads=REPORT_READS) as conn:
        rate, failed, attempted = reporting.payment_failure_rate(conn, datetime.now(UTC), config.days)
    return dg.AssetCheckResult(passed=rate <= config.max_rate,
                               metadata={"rate": dg.MetadataValue.float(rate), "failed": failed,
                                         "attempted": attempted, "max_rate": dg.MetadataValue.float(config.max_rate)})


@billing_check(asset=billing_leaks, description="No billing leak remains in billing_leaks: no "
                                                 "charging of deleted or community organisations, no "
                                                 "company past its grace period without a "
                                                 "subscription. If it fails: cancel or refund the "
                                                 "listed subscriptions with the operator jobs, or "
                                                 "chase the listed companies. Drill: `python -m "
                                                 "devstack incident leak` under make dev.")
def no_billing_leaks(store: MailroomStore) -> dg.AssetCheckResult:
    with store.reports(reads=REPORT_READS, tables=["billing_leaks"]) as conn:
        rows = conn.execute("SELECT leak, organization_id, subscription_id FROM billing_leaks ORDER BY 1, 2").fetchall()
    return dg.AssetCheckResult(passed=not rows, metadata={"leaks": len(rows), "examples": _listing(rows)})


INGEST_CHECKS = [stripe_subscriptions_have_customers, stripe_events_quarantine_share]
REPORT_CHECKS = [live_subscriptions_have_customer_and_organisation, none_live_here_canceled_in_stripe,
                 drift_repaired, payment_failure_rate_under_threshold, no_billing_leaks]
BILLING_CHECKS = [*INGEST_CHECKS, *REPORT_CHECKS]
