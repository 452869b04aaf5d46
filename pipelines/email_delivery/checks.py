"""Asset checks on ses_reputation at SES's thresholds: WARN at the warning level, ERROR at the
level where SES reviews or pauses the account. Both fail the check; the severity tells them apart."""

from __future__ import annotations

import dagster as dg

from pipelines.email_delivery.reporting import (BOUNCE_FAIL, BOUNCE_WARN, COMPLAINT_FAIL, COMPLAINT_WARN, Reputation,
                                           grade)

REPUTATION_CHECKS = [
    dg.AssetCheckSpec("bounce_rate_below_ses_thresholds", asset="ses_reputation",
                      description=f"Hard-bounce rate over the window: warn at {BOUNCE_WARN:.0%}, error at "
                                  f"{BOUNCE_FAIL:.0%} (where SES reviews the account). If it fails: find the "
                                  "kinds and senders that bounce (email_delivery_daily), stop the source of bad "
                                  "addresses (unverified signups, old lists); bounced addresses are already "
                                  "suppressed. docs/operations.md: 'A reputation check fails'. Drill: "
                                  "`python -m devstack incident bounce-storm` under make dev."),
    dg.AssetCheckSpec("complaint_rate_below_ses_thresholds", asset="ses_reputation",
                      description=f"Complaint rate over the window: warn at {COMPLAINT_WARN:.1%}, error at "
                                  f"{COMPLAINT_FAIL:.1%} (where SES may pause sending). If it fails: find the "
                                  "kind people mark as spam (email_delivery_daily), stop or change that mail; "
                                  "complainers are already suppressed. docs/operations.md: 'A reputation check "
                                  "fails'. Drill: `python -m devstack incident complaint-burst` under make dev."),
]


def _result(name: str, rate: float, warn: float, fail: float, rep: Reputation) -> dg.AssetCheckResult:
    level = grade(rate, warn, fail)
    return dg.AssetCheckResult(
        check_name=name,
        asset_key="ses_reputation",
        passed=level == "ok",
        severity=dg.AssetCheckSeverity.ERROR if level == "fail" else dg.AssetCheckSeverity.WARN,
        metadata={"rate": dg.MetadataValue.float(rate), "warn_at": dg.MetadataValue.float(warn),
                  "fail_at": dg.MetadataValue.float(fail), "sent": dg.MetadataValue.int(rep.sent),
                  "level": level},
    )


def reputation_check_results(rep: Reputation) -> list[dg.AssetCheckResult]:
    return [
        _result("bounce_rate_below_ses_thresholds", rep.bounce_rate, BOUNCE_WARN, BOUNCE_FAIL, rep),
        _result("complaint_rate_below_ses_thresholds", rep.complaint_rate, COMPLAINT_WARN, COMPLAINT_FAIL, rep),
    ]
