"""Assets (group "email"): the ledgers email_events and email_addresses (written by
ingest_ses_notifications_job), and the rollups email_status, email_delivery_daily,
ses_reputation (+ checks), each refreshed when new rows land in what it reads."""

from datetime import datetime, timezone

import dagster as dg

from pipelines.common.ledgers import ledger_spec
from pipelines.email.assets import EMAIL_MESSAGES
from pipelines.email_delivery.checks import REPUTATION_CHECKS, reputation_check_results
from pipelines.email_delivery.reporting import compute_reputation, refresh_delivery_daily, email_status_counts
from resources.duckdb import DuckDBResource

EMAIL = "email"
EMAIL_EVENTS = "email_events"
EMAIL_ADDRESSES = "email_addresses"

email_events = ledger_spec(
    EMAIL_EVENTS, group=EMAIL,
    description="every SES event (delivery, bounce, complaint, ...), keyed by the SNS MessageId; events of "
                "unknown messages are kept as orphans and linked when their message is recorded.")
email_addresses = ledger_spec(
    EMAIL_ADDRESSES, group=EMAIL,
    description="per address: verified or not, with the reason (hard bounce, complaint), the soft-bounce "
                "count and the last transient bounce; send_email_batch_job skips unverified addresses.")
# Materialize when what it reads has new rows (a drain landed some), never two at once.
REFRESH = dg.AutomationCondition.eager()


@dg.asset(group_name=EMAIL, pool="duckdb", kinds={"duckdb"}, deps=[EMAIL_MESSAGES, EMAIL_EVENTS],
          automation_condition=REFRESH,
          description="View: current status of every message, with its latest SES event.")
def email_status(duckdb: DuckDBResource) -> dg.MaterializeResult:
    with duckdb.connect() as conn:
        counts = email_status_counts(conn)
    return dg.MaterializeResult(metadata={
        "messages": dg.MetadataValue.int(sum(counts.values())),
        **{f"status_{k.replace('-', '_')}": dg.MetadataValue.int(v) for k, v in counts.items()},
    })


@dg.asset(group_name=EMAIL, pool="duckdb", kinds={"duckdb"}, deps=[email_status], automation_condition=REFRESH,
          description="Per day and kind: sent, delivered, hard/soft bounced, complained, and the rates.")
def email_delivery_daily(duckdb: DuckDBResource) -> dg.MaterializeResult:
    with duckdb.connect() as conn:
        rows = refresh_delivery_daily(conn)
        latest = conn.execute("SELECT max(day) FROM email_delivery_daily").fetchone()[0]
    return dg.MaterializeResult(metadata={"rows": dg.MetadataValue.int(rows), "latest_day": str(latest)})


class ReputationConfig(dg.Config):
    window_days: int = 7


@dg.asset(group_name=EMAIL, pool="duckdb", kinds={"duckdb"}, deps=[email_status], check_specs=REPUTATION_CHECKS,
          automation_condition=REFRESH,
          description="Trailing-window bounce and complaint rates, checked against SES's thresholds; refreshed "
                      "(and its checks run) whenever new SES events land. A failed check: docs/operations.md.")
def ses_reputation(config: ReputationConfig, duckdb: DuckDBResource):
    with duckdb.connect() as conn:
        rep = compute_reputation(conn, datetime.now(timezone.utc), config.window_days)
    yield dg.MaterializeResult(
        metadata={
            "bounce_rate": dg.MetadataValue.float(rep.bounce_rate),
            "complaint_rate": dg.MetadataValue.float(rep.complaint_rate),
            "sent": dg.MetadataValue.int(rep.sent),
            "hard_bounces": dg.MetadataValue.int(rep.hard_bounces),
            "complaints": dg.MetadataValue.int(rep.complaints),
            "window_days": dg.MetadataValue.int(rep.window_days),
        },
        check_results=reputation_check_results(rep),
    )
