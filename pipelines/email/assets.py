"""email_messages (the outbox ledger, written by send_email_batch_job and ingest_ses_notifications_job)
and email_sends_daily: per day and kind, sent / skipped by reason / failed (checks in checks.py)."""

import dagster as dg

from pipelines.common.asset_metadata import preview
from pipelines.common.ledgers import ledger_spec
from pipelines.email import sends_daily
from pipelines.email.checks import CHECKS, MAX_FAILURE_RATE, STUCK_PENDING_MINUTES
from pipelines.email.ledger import EMAIL_MESSAGES
from pipelines.store_resource import MailroomStore
email_messages = ledger_spec(
    EMAIL_MESSAGES, group="email",
    description="the outbox: one row per request and recipient, pending -> sent | failed, or skipped with "
                "its reason; SES events move sent rows on to delivered, bounced, complained.")


@dg.asset(group_name="email", pool="duckdb", check_specs=CHECKS, kinds={"duckdb"}, deps=[EMAIL_MESSAGES],
          automation_condition=dg.AutomationCondition.eager(),
          description="DuckDB table email_sends_daily, rebuilt from the email_messages ledger: per UTC day and "
                      "kind, the counts of sent (accepted by the provider, including later delivery statuses), "
                      "skipped by reason, failed, pending. Metadata: row count, the newest rows, totals and "
                      "today's failure rate (plotted over materializations). When a check fails, its "
                      "description says what to do; docs/operations.md has the runbook.")
def email_sends_daily(context: dg.AssetExecutionContext, store: MailroomStore):
    with store.reports(reads=[EMAIL_MESSAGES], writes=["email_sends_daily"]) as conn:   # the rebuild and the figures read from it
        rows = sends_daily.materialize(conn)
        totals = sends_daily.totals(conn)
        ledger, counted = sends_daily.ledger_mismatch(conn)
        stuck = sends_daily.stuck_pending(conn, STUCK_PENDING_MINUTES)
        rate, failed, sent = sends_daily.failure_rate(conn)
        newest = preview(conn, "SELECT * FROM email_sends_daily ORDER BY day DESC, kind")
    yield dg.MaterializeResult(metadata={
        "rows": dg.MetadataValue.int(rows), "preview": newest,
        "failure_rate_today": dg.MetadataValue.float(round(rate, 4)),
        **{f"total_{k}": dg.MetadataValue.int(v) for k, v in totals.items()}})
    yield dg.AssetCheckResult(check_name="email_sends_daily_matches_ledger", passed=ledger == counted,
                              metadata={"ledger_rows": ledger, "counted_rows": counted})
    yield dg.AssetCheckResult(check_name="email_no_stuck_pending", passed=stuck == 0,
                              metadata={"stuck_pending": stuck})
    yield dg.AssetCheckResult(check_name="email_failure_rate_today", passed=rate <= MAX_FAILURE_RATE,
                              severity=dg.AssetCheckSeverity.WARN,
                              metadata={"failure_rate": round(rate, 4), "failed": failed, "sent": sent})
