"""The checks on email_sends_daily (evaluated by the asset, assets.py)."""

import dagster as dg

MAX_FAILURE_RATE = 0.05
STUCK_PENDING_MINUTES = 60

CHECKS = [
    dg.AssetCheckSpec("email_sends_daily_matches_ledger", asset="email_sends_daily", blocking=True,
                      description="Every email_messages row is counted once, every skip has a known reason. "
                                  "Blocking: downstream assets wait. If it fails: a status or skip reason was "
                                  "added without updating pipelines/email/sends_daily.py; compare the check's "
                                  "ledger_rows with counted_rows, fix the rollup, rematerialize."),
    dg.AssetCheckSpec("email_no_stuck_pending", asset="email_sends_daily",
                      description=f"No outbox row pending for more than {STUCK_PENDING_MINUTES} minutes. If it "
                                  "fails: a send run died between claiming and recording. Its request is back "
                                  "on the queue and the next send_email_batch_job run resends it; if the "
                                  "count stays, look for failed runs of that job and their logs."),
    dg.AssetCheckSpec("email_failure_rate_today", asset="email_sends_daily",
                      description=f"Failed sends stay at or below {MAX_FAILURE_RATE:.0%} of attempted sends "
                                  "over the last day (warning). If it fails: read error_message of today's failed "
                                  "email_messages rows (python -m pipelines.query); a provider outage or "
                                  "throttling clears by itself, a rejected sender or template needs a fix."),
]
