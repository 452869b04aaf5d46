"""Assets (group "email"): the ledgers email_events and email_addresses (written by
ingest_ses_notifications_job), and the rollups email_status, email_delivery_daily,
ses_reputation (+ checks), each refreshed when new rows land in what it reads."""

from datetime import datetime, timezone

import dagster as dg

from pipelines.common.asset_metadata import preview, row_count
from pipelines.common.ledgers import ledger_spec
from pipelines.email.ledger import EMAIL_MESSAGES
from pipelines.email_delivery.checks import REPUTATION_CHECKS, reputation_check_results
from pipelines.email_delivery.reporting import compute_reputation, refresh_delivery_daily, email_status_counts
from pipelines.store_resource import MailroomStore

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
# The ledgers the rollups read (the email_status view joins them).
REPORT_READS = (EMAIL_MESSAGES, EMAIL_EVENTS)
# Materialize when what it reads has new rows (a drain landed some), never two at once.
REFRESH = dg.AutomationCondition.eager()


@dg.asset(group_name=EMAIL, pool="duckdb", kinds={"duckdb"}, deps=[EMAIL_MESSAGES, EMAIL_EVENTS],
          automation_condition=REFRESH,
          description="DuckDB view email_status: every message's current status with its latest SES event "
                      "(email_messages joined with email_events, kept current by the two drain jobs). "
                      "Metadata: messages, messages per status (plotted over materializations) and a table of "
                      "statuses by kind; no addresses. No checks: ses_reputation and email_sends_daily check "
                      "what it shows.")
def email_status(store: MailroomStore) -> dg.MaterializeResult:
    with store.reports(reads=REPORT_READS) as conn:
        counts = email_status_counts(conn)
        by_kind = preview(conn, "SELECT kind, status, count(*) AS messages, max(status_at) AS latest "
                                "FROM email_status GROUP BY ALL ORDER BY kind, status", limit=50)
    return dg.MaterializeResult(metadata={
        "rows": dg.MetadataValue.int(sum(counts.values())),
        "messages": dg.MetadataValue.int(sum(counts.values())),
        "preview": by_kind,
        **{f"status_{k.replace('-', '_')}": dg.MetadataValue.int(v) for k, v in counts.items()},
    })


@dg.asset(group_name=EMAIL, pool="duckdb", kinds={"duckdb"}, deps=[email_status], automation_condition=REFRESH,
          description="DuckDB table email_delivery_daily, rebuilt from email_messages and email_events: per UTC "
                      "day (of sending) and kind, sent, delivered, hard/soft bounced, complained, and the "
                      "rates. Metadata: row count, the newest rows, and the newest day's rates over all kinds "
                      "(plotted over materializations). No checks of its own: ses_reputation checks the "
                      "rates SES judges the account by.")
def email_delivery_daily(store: MailroomStore) -> dg.MaterializeResult:
    with store.reports(reads=REPORT_READS, writes=["email_delivery_daily"]) as conn:   # the rebuild and the figures read from it
        rows = refresh_delivery_daily(conn)
        latest, sent, delivered, hard, complained = conn.execute(
            "SELECT day, sum(sent), sum(delivered), sum(hard_bounced), sum(complained) FROM email_delivery_daily "
            "WHERE day = (SELECT max(day) FROM email_delivery_daily) GROUP BY day").fetchone() or (None, 0, 0, 0, 0)
        newest = preview(conn, "SELECT * FROM email_delivery_daily ORDER BY day DESC, kind")

    def rate(n: int) -> float:
        return round(n / sent, 4) if sent else 0.0

    return dg.MaterializeResult(metadata={
        "rows": dg.MetadataValue.int(rows), "preview": newest, "latest_day": str(latest),
        "latest_day_sent": dg.MetadataValue.int(int(sent)),
        "latest_day_delivery_rate": dg.MetadataValue.float(rate(delivered)),
        "latest_day_bounce_rate": dg.MetadataValue.float(rate(hard)),
        "latest_day_complaint_rate": dg.MetadataValue.float(rate(complained)),
    })


class ReputationConfig(dg.Config):
    window_days: int = 7


@dg.asset(group_name=EMAIL, pool="duckdb", kinds={"duckdb"}, deps=[email_status], check_specs=REPUTATION_CHECKS,
          automation_condition=REFRESH,
          description="Trailing-window (7 days) hard-bounce and complaint rates over the mail sent, appended "
                      "to the DuckDB table ses_reputation, and checked against the thresholds at which SES "
                      "warns, reviews or pauses sending. Metadata: the rates and counts (plotted over "
                      "materializations), rows, the last computations. A failed check: see the check's "
                      "description and docs/operations.md, 'A reputation check fails'. Refreshed, and its "
                      "checks run, whenever new SES events land.")
def ses_reputation(config: ReputationConfig, store: MailroomStore):
    # ses_reputation keeps a row per computation: the workspace loads the history before appending.
    with store.reports(reads=REPORT_READS, writes=["ses_reputation"]) as conn:
        rep = compute_reputation(conn, datetime.now(timezone.utc), config.window_days)
        rows = row_count(conn, "ses_reputation")
        history = preview(conn, "SELECT * FROM ses_reputation ORDER BY computed_at DESC")
    yield dg.MaterializeResult(
        metadata={
            "rows": dg.MetadataValue.int(rows),
            "preview": history,
            "bounce_rate": dg.MetadataValue.float(rep.bounce_rate),
            "complaint_rate": dg.MetadataValue.float(rep.complaint_rate),
            "sent": dg.MetadataValue.int(rep.sent),
            "hard_bounces": dg.MetadataValue.int(rep.hard_bounces),
            "complaints": dg.MetadataValue.int(rep.complaints),
            "window_days": dg.MetadataValue.int(rep.window_days),
        },
        check_results=reputation_check_results(rep),
    )
