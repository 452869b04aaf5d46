"""Asset group `billing`: the ledger and the tables the stripe-events consumer writes, with
lineage stripe_events -> each projection, the platform's input tables, and the reports computed
from them (subscriptions_current, billing_daily, billing_leaks).

They are written by ingest_stripe_events_job (a queue drain, not an asset materialisation), so
they are declared as asset specs and the drain reports a materialisation of each, with its row
count and the run's figures, after every run that took messages (the consumer kit's `ledgers`)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import dagster as dg

from pipelines import settings
from pipelines.billing import reporting
from pipelines.billing.object_types import TABLES
from pipelines.common.asset_metadata import preview, row_count
from pipelines.common.ledgers import table_rows
from pipelines.store_resource import MailroomStore

BILLING = "billing"

LEDGER = "stripe_events"
PROJECTIONS = {t.name: t.description for t in TABLES}
INPUTS = {
    "organizations": "Platform input: organisations (company or community), filled by the platform.",
    "organization_members": "Platform input: members of each organisation (seat counts).",
}

ledger_spec = dg.AssetSpec(LEDGER, group_name=BILLING, kinds={"duckdb"},
                           description="Every Stripe event received, keyed by event id, with its outcome "
                                       "(applied, stale, ignored-tenant, unknown-type, quarantined).")
projection_specs = [dg.AssetSpec(name, group_name=BILLING, kinds={"duckdb"}, deps=[LEDGER], description=text)
                    for name, text in PROJECTIONS.items()]
input_specs = [dg.AssetSpec(name, group_name=BILLING, kinds={"duckdb"}, description=text)
               for name, text in INPUTS.items()]
BILLING_ASSETS = [ledger_spec, *projection_specs, *input_specs]


def report_inputs(rows: dict[str, int], source: str, dagster_home: str | None = None) -> bool:
    """Tell Dagster the platform's input tables changed (a materialization of each, with its row
    count), so lineage shows when they were loaded and the reports refresh. Needs the instance the
    code location uses (`dagster_home`, else DAGSTER_HOME); without one nothing is reported: False."""
    home = dagster_home or settings.value("DAGSTER_HOME")
    if not home:
        return False
    with dg.DagsterInstance.from_config(home) as instance:
        for name, count in rows.items():
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key=name, description=f"loaded by {source}", metadata={"rows": dg.MetadataValue.int(count)}))
    return True


DRAIN_TABLES = [LEDGER, *PROJECTIONS]


def table_rows_metadata(context) -> dict[str, int]:
    """The drain's after_run: each table's row count in the run's output. (The kit reports the
    tables' materializations: they are the drain's `ledgers`.)"""
    with context.resources.store.ledgers().read() as conn:
        return {f"{name}_rows": rows for name, rows in table_rows(conn, DRAIN_TABLES).items()}


# ---- reports ---------------------------------------------------------------------------------

# The reports are computed from the ingested tables and the platform's inputs.
UPSTREAM = [dg.AssetKey(k) for k in ("stripe_subscriptions", "stripe_subscription_items", "stripe_customers",
                                     "stripe_prices", "stripe_payments", "organizations", "organization_members")]

# The ledgers and inputs the reports and their checks read.
REPORT_READS = ("stripe_subscriptions", "stripe_subscription_items", "stripe_customers", "stripe_prices",
                "stripe_payments", "organizations", "organization_members", "billing_reconcile_runs",
                "billing_drift")

# Refreshed (their checks with them) once a Stripe drain lands rows or the platform's inputs are
# loaded, never two at once; billing_reports_schedule runs them daily besides. The platform may
# fill its input tables without telling Dagster, so an input never reported does not hold them back.
REFRESH = dg.AutomationCondition.eager().replace(
    "any_deps_missing", dg.AutomationCondition.any_deps_missing().ignore(dg.AssetSelection.assets(*INPUTS)))


def _md(values: dict) -> dict:
    out = {}
    for k, v in values.items():
        out[k] = (dg.MetadataValue.float(float(v)) if isinstance(v, float)
                  else dg.MetadataValue.int(int(v)) if isinstance(v, int) else dg.MetadataValue.text(str(v)))
    return out


def _refreshed(store: MailroomStore, table: str, refresh, preview_sql: str) -> dg.MaterializeResult:
    """Rebuild `table` with `refresh` (its figures go into the metadata), with its rows and a preview."""
    with store.reports(reads=REPORT_READS, writes=[table]) as conn:
        figures = refresh(conn, datetime.now(UTC))
        shown = preview(conn, preview_sql)
        rows = row_count(conn, table)
    return dg.MaterializeResult(metadata={"rows": dg.MetadataValue.int(rows), "preview": shown, **_md(figures)})


@dg.asset(group_name=BILLING, pool="duckdb", kinds={"duckdb"}, deps=UPSTREAM, automation_condition=REFRESH,
          description="One row per organisation: its subscription, status, seats, period end and good standing.")
def subscriptions_current(store: MailroomStore) -> dg.MaterializeResult:
    return _refreshed(store, "subscriptions_current", reporting.refresh_subscriptions_current,
                      "SELECT status, good_standing, count(*) AS organisations, sum(seats) AS seats "
                      "FROM subscriptions_current GROUP BY ALL ORDER BY 1, 2")


@dg.asset(group_name=BILLING, pool="duckdb", kinds={"duckdb"}, deps=UPSTREAM, automation_condition=REFRESH,
          description="Per day: new, churned and reactivated subscriptions, payments succeeded and failed, "
                      "refunds and disputes; metadata adds MRR by currency and subscriptions by status.")
def billing_daily(store: MailroomStore) -> dg.MaterializeResult:
    return _refreshed(store, "billing_daily", reporting.refresh_billing_daily,
                      "SELECT * FROM billing_daily ORDER BY day DESC")


@dg.asset(group_name=BILLING, pool="duckdb", kinds={"duckdb"}, deps=UPSTREAM, automation_condition=REFRESH,
          description="Billing leaks: live subscriptions of deleted or community organisations, and company "
                      "organisations past their grace period without an active subscription.")
def billing_leaks(store: MailroomStore) -> dg.MaterializeResult:
    with store.reports(reads=REPORT_READS, writes=["billing_leaks"]) as conn:
        leaks = reporting.refresh_billing_leaks(conn, datetime.now(UTC))
        shown = preview(conn, "SELECT leak, count(*) AS leaks FROM billing_leaks GROUP BY ALL ORDER BY 1")
    kinds = Counter(leak[0] for leak in leaks)
    return dg.MaterializeResult(metadata={"rows": dg.MetadataValue.int(len(leaks)), "preview": shown,
                                          "leaks": dg.MetadataValue.int(len(leaks)),
                                          **{k: dg.MetadataValue.int(v) for k, v in kinds.items()}})


REPORT_ASSETS = [subscriptions_current, billing_daily, billing_leaks]
