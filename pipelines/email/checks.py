"""The checks on email_sends_daily (evaluated by the asset, assets.py)."""

import dagster as dg

MAX_FAILURE_RATE = 0.05
STUCK_PENDING_MINUTES = 60

CHECKS = [
    dg.AssetCheckSpec("email_sends_daily_matches_ledger", asset="email_sends_daily", blocking=True,
                      description="Every email_messages row is counted once, every skip has a known reason."),
    dg.AssetCheckSpec("email_no_stuck_pending", asset="email_sends_daily",
                      description=f"No outbox row pending for more than {STUCK_PENDING_MINUTES} minutes."),
    dg.AssetCheckSpec("email_failure_rate_today", asset="email_sends_daily",
                      description=f"Failed sends stay at or below {MAX_FAILURE_RATE:.0%} of attempted sends "
                                  "over the last day."),
]
