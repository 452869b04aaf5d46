"""Asset checks on the ingested billing tables."""

from __future__ import annotations

import dagster as dg

from resources.duckdb import DuckDBResource

QUARANTINE_SHARE = 0.01  # of the last day's Stripe events


def orphan_subscriptions(conn) -> int:
    return conn.execute("SELECT count(*) FROM stripe_subscriptions s ANTI JOIN stripe_customers c "
                        "USING (customer_id)").fetchone()[0]


def quarantine_share(conn, hours: int = 24) -> tuple[int, int]:
    return conn.execute(
        "SELECT count(*) FILTER (WHERE outcome = 'quarantined'), count(*) FROM stripe_events "
        f"WHERE received_at > now() - INTERVAL {int(hours)} HOUR").fetchone()


@dg.asset_check(asset="stripe_subscriptions", description="Every subscription's customer is in stripe_customers "
                "(a miss means a customer's events were lost or are still quarantined). If it fails: look in "
                "quarantine for source stripe-events, replay it after a fix, or run resync_customer_job.")
def stripe_subscriptions_have_customers(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.connect() as conn:
        orphans = orphan_subscriptions(conn)
    return dg.AssetCheckResult(passed=orphans == 0, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"subscriptions_without_customer": orphans})


@dg.asset_check(asset="stripe_events", description=f"At most {QUARANTINE_SHARE:.0%} of the last day's Stripe "
                "events were quarantined. If it fails: read the reasons in quarantine (source stripe-events), fix the "
                "cause (allow-list, webhook secret, handler) and run replay_stripe_quarantine_job.")
def stripe_events_quarantine_share(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.connect() as conn:
        quarantined, total = quarantine_share(conn)
    share = quarantined / total if total else 0.0
    return dg.AssetCheckResult(passed=share <= QUARANTINE_SHARE,
                               metadata={"quarantined": quarantined, "events": total,
                                         "share": dg.MetadataValue.float(share)})


BILLING_CHECKS = [stripe_subscriptions_have_customers, stripe_events_quarantine_share]
