"""Billing assets (group `billing`): subscriptions_current, billing_daily, billing_leaks, and their checks."""


from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from pipelines.billing import reporting
from pipelines.billing.ops_tables import ensure_ops_tables
from resources.duckdb import DuckDBResource

BILLING = "billing"
# The ingestion tables these are computed from (billing-core's assets) and the platform's inputs.
UPSTREAM = [dg.AssetKey(k) for k in ("stripe_subscriptions", "stripe_subscription_items", "stripe_customers",
                                     "stripe_prices", "stripe_payments", "organizations", "organization_members")]


def _md(values: dict) -> dict:
    out = {}
    for k, v in values.items():
        out[k] = (dg.MetadataValue.float(float(v)) if isinstance(v, float)
                  else dg.MetadataValue.int(int(v)) if isinstance(v, int) else dg.MetadataValue.text(str(v)))
    return out


@dg.asset(group_name=BILLING, pool="duckdb", kinds={"duckdb"}, deps=UPSTREAM,
          description="One row per organisation: its subscription, status, seats, period end and good standing.")
def subscriptions_current(duckdb: DuckDBResource) -> dg.MaterializeResult:
    with duckdb.connect() as conn:
        ensure_ops_tables(conn)
        figures = reporting.refresh_subscriptions_current(conn, datetime.now(UTC))
    return dg.MaterializeResult(metadata=_md(figures))


@dg.asset(group_name=BILLING, pool="duckdb", kinds={"duckdb"}, deps=UPSTREAM,
          description="Per day: new, churned and reactivated subscriptions, payments succeeded and failed, "
                      "refunds and disputes; metadata adds MRR by currency and subscriptions by status.")
def billing_daily(duckdb: DuckDBResource) -> dg.MaterializeResult:
    with duckdb.connect() as conn:
        figures = reporting.refresh_billing_daily(conn, datetime.now(UTC))
    return dg.MaterializeResult(metadata=_md(figures))


@dg.asset(group_name=BILLING, pool="duckdb", kinds={"duckdb"}, deps=UPSTREAM,
          description="Billing leaks: live subscriptions of deleted or community organisations, and company "
                      "organisations past their grace period without an active subscription.")
def billing_leaks(duckdb: DuckDBResource) -> dg.MaterializeResult:
    with duckdb.connect() as conn:
        leaks = reporting.refresh_billing_leaks(conn, datetime.now(UTC))
    kinds: dict[str, int] = {}
    for leak in leaks:
        kinds[leak[0]] = kinds.get(leak[0], 0) + 1
    return dg.MaterializeResult(metadata={"leaks": dg.MetadataValue.int(len(leaks)),
                                          **{k: dg.MetadataValue.int(v) for k, v in kinds.items()}})


# --- checks ----------------------------------------------------------------------------------------

def _listing(rows: list[tuple], limit: int = 20) -> dg.MetadataValue:
    return dg.MetadataValue.md("\n".join(f"- {' | '.join(str(c) for c in r)}" for r in rows[:limit]) or "none")


@dg.asset_check(asset=subscriptions_current, description="Every live subscription has a customer and an organisation.")
def live_subscriptions_have_customer_and_organisation(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.connect() as conn:
        rows = reporting.live_without_customer_or_org(conn)
    return dg.AssetCheckResult(passed=not rows, metadata={"orphans": len(rows), "examples": _listing(rows)})


@dg.asset_check(asset=subscriptions_current,
                description="No subscription is live in DuckDB that the last reconciliation saw canceled in Stripe.")
def none_live_here_canceled_in_stripe(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.connect() as conn:
        ensure_ops_tables(conn)
        rows = reporting.active_here_canceled_in_stripe(conn)
    return dg.AssetCheckResult(passed=not rows, metadata={"subscriptions": len(rows), "examples": _listing(rows)})


@dg.asset_check(asset=subscriptions_current, description="The last reconciliation left no drift unrepaired.")
def drift_repaired(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.connect() as conn:
        ensure_ops_tables(conn)
        run_id, unrepaired = reporting.last_run_unrepaired(conn)
        rows = conn.execute("SELECT object_type, object_id, field, reason FROM billing_drift"
                            " WHERE run_id = ? AND action = 'unrepaired' LIMIT 20", [run_id]).fetchall() if run_id else []
    return dg.AssetCheckResult(passed=unrepaired == 0,
                               metadata={"run_id": str(run_id), "unrepaired": unrepaired, "examples": _listing(rows)})


class FailureRateConfig(dg.Config):
    max_rate: float = Field(default=0.2, description="Largest acceptable share of failed PaymentIntents.")
    days: int = Field(default=7, description="Window, in days, of PaymentIntents looked at.")


@dg.asset_check(asset=billing_daily, description="The payment failure rate stays under a threshold (config max_rate).")
def payment_failure_rate_under_threshold(config: FailureRateConfig, duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.connect() as conn:
        rate, failed, attempted = reporting.payment_failure_rate(conn, datetime.now(UTC), config.days)
    return dg.AssetCheckResult(passed=rate <= config.max_rate,
                               metadata={"rate": dg.MetadataValue.float(rate), "failed": failed,
                                         "attempted": attempted, "max_rate": dg.MetadataValue.float(config.max_rate)})


@dg.asset_check(asset=billing_leaks, description="No billing leaks remain.")
def no_billing_leaks(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.connect() as conn:
        rows = conn.execute("SELECT leak, organization_id, subscription_id FROM billing_leaks ORDER BY 1, 2").fetchall()
    return dg.AssetCheckResult(passed=not rows, metadata={"leaks": len(rows), "examples": _listing(rows)})


OPS_ASSETS = [subscriptions_current, billing_daily, billing_leaks]
OPS_CHECKS = [live_subscriptions_have_customer_and_organisation, none_live_here_canceled_in_stripe, drift_repaired,
              payment_failure_rate_under_threshold, no_billing_leaks]

billing_reports_job = dg.define_asset_job("billing_reports_job", selection=dg.AssetSelection.assets(*OPS_ASSETS),
                                          description="subscriptions_current, billing_daily, billing_leaks and checks.")
billing_reports_schedule = dg.ScheduleDefinition(
    name="billing_reports_schedule", job=billing_reports_job, cron_schedule="40 2 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The billing assets, daily after reconciliation (their checks run with them).")
