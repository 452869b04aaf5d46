"""What the billing assets and checks compute from the tables (SQL only; Dagster-free).

Each refresh replaces its table's rows (declared in tables.py); call it inside a write transaction.

    refresh_subscriptions_current(conn, now)  -> subscriptions_current: one row per organisation
    refresh_billing_daily(conn, now)          -> billing_daily rows; figures of the day for metadata
    refresh_billing_leaks(conn, now)          -> billing_leaks: what is charged or open that should not be
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import duckdb

from pipelines.billing.vocab import OrganizationType, PaymentKind, ReconcileMode, SubscriptionStatus, sql_in

# still charging / granting access, and in good standing (past_due keeps access while Stripe
# retries the payment)
LIVE = sql_in(SubscriptionStatus.LIVE)
GRACE_DAYS = 30

_CURRENT = f"""
INSERT INTO subscriptions_current BY NAME
WITH items AS (
    SELECT subscription_id, sum(quantity) AS seats FROM stripe_subscription_items GROUP BY subscription_id
), ranked AS (
    SELECT s.*, i.seats,
           row_number() OVER (PARTITION BY s.organization_id
                              ORDER BY s.status IN {LIVE} DESC, s.created DESC, s.subscription_id) AS rn
    FROM stripe_subscriptions s LEFT JOIN items i USING (subscription_id)
    WHERE s.organization_id IS NOT NULL
)
SELECT o.id AS organization_id, o.name AS organization_name, o.type AS organization_type,
       r.subscription_id, r.customer_id, r.status, r.seats, r.current_period_end,
       coalesce(r.cancel_at_period_end, false) AS cancel_at_period_end,
       CASE WHEN o.type = '{OrganizationType.COMMUNITY}' THEN true
            WHEN r.status IN {LIVE} THEN true
            WHEN r.subscription_id IS NULL AND o.created > ?::TIMESTAMPTZ THEN true
            ELSE false END AS good_standing,
       CASE WHEN o.type = '{OrganizationType.COMMUNITY}' THEN 'community organisation'
            WHEN r.status IN {LIVE} THEN 'subscription ' || r.status
            WHEN r.subscription_id IS NULL AND o.created > ?::TIMESTAMPTZ THEN 'within the grace period'
            WHEN r.subscription_id IS NULL THEN 'no subscription'
            ELSE 'subscription ' || r.status END AS standing_reason
FROM organizations o LEFT JOIN ranked r ON r.organization_id = o.id AND r.rn = 1
WHERE o.deleted_at IS NULL
"""


def refresh_subscriptions_current(conn: duckdb.DuckDBPyConnection, now: datetime) -> dict[str, Any]:
    grace = now - timedelta(days=GRACE_DAYS)
    conn.execute("DELETE FROM subscriptions_current")
    conn.execute(_CURRENT, [grace, grace])
    rows = conn.execute("SELECT count(*), count(*) FILTER (WHERE good_standing),"
                        " count(*) FILTER (WHERE NOT good_standing) FROM subscriptions_current").fetchone()
    by_status = dict(conn.execute("SELECT coalesce(status, 'none'), count(*) FROM subscriptions_current"
                                  " GROUP BY 1 ORDER BY 1").fetchall())
    return {"organizations": rows[0], "good_standing": rows[1], "not_good_standing": rows[2],
            **{f"status_{k}": v for k, v in by_status.items()}}


# A PaymentIntent failed when Stripe recorded a payment error on it (last_payment_error); one
# merely created and not yet confirmed is neither succeeded nor failed.
FAILED_PI = "failure_code IS NOT NULL AND status <> 'succeeded'"

_DAILY = f"""
INSERT INTO billing_daily BY NAME
WITH subs AS (
    SELECT CAST(s.created AS DATE) AS day,
           EXISTS (SELECT 1 FROM stripe_subscriptions p
                   WHERE p.organization_id = s.organization_id AND p.created < s.created
                     AND p.status IN {sql_in(SubscriptionStatus.ENDED)}) AS is_return
    FROM stripe_subscriptions s
), started AS (
    SELECT day, count(*) FILTER (WHERE NOT is_return) AS new_subscriptions,
           count(*) FILTER (WHERE is_return) AS reactivated_subscriptions
    FROM subs GROUP BY day
), churned AS (
    SELECT CAST(coalesce(ended_at, canceled_at) AS DATE) AS day, count(*) AS churned_subscriptions
    FROM stripe_subscriptions WHERE status = '{SubscriptionStatus.CANCELED}' GROUP BY 1
), money AS (
    SELECT CAST(created AS DATE) AS day,
           count(*) FILTER (WHERE kind = '{PaymentKind.PAYMENT_INTENT}' AND status = 'succeeded') AS payments_succeeded,
           count(*) FILTER (WHERE kind = '{PaymentKind.PAYMENT_INTENT}' AND {FAILED_PI}) AS payments_failed,
           count(*) FILTER (WHERE kind = '{PaymentKind.REFUND}') AS refunds,
           coalesce(sum(amount) FILTER (WHERE kind = '{PaymentKind.REFUND}'), 0) AS refunded_amount,
           count(*) FILTER (WHERE kind = '{PaymentKind.DISPUTE}') AS disputes
    FROM stripe_payments GROUP BY 1
), days AS (
    SELECT day FROM started UNION SELECT day FROM churned UNION SELECT day FROM money
)
SELECT d.day,
       coalesce(s.new_subscriptions, 0) AS new_subscriptions,
       coalesce(s.reactivated_subscriptions, 0) AS reactivated_subscriptions,
       coalesce(c.churned_subscriptions, 0) AS churned_subscriptions,
       coalesce(m.payments_succeeded, 0) AS payments_succeeded,
       coalesce(m.payments_failed, 0) AS payments_failed,
       coalesce(m.refunds, 0) AS refunds,
       coalesce(m.refunded_amount, 0) AS refunded_amount,
       coalesce(m.disputes, 0) AS disputes
FROM days d LEFT JOIN started s USING (day) LEFT JOIN churned c USING (day) LEFT JOIN money m USING (day)
WHERE d.day IS NOT NULL ORDER BY d.day
"""

# Monthly recurring revenue of the live subscriptions, per currency, in minor units.
_MRR = f"""
SELECT p.currency,
       sum(i.quantity * p.unit_amount *
           CASE p.recurring_interval WHEN 'year' THEN 1.0 / 12 WHEN 'week' THEN 52.0 / 12
                                     WHEN 'day' THEN 365.0 / 12 ELSE 1 END
           / greatest(coalesce(p.recurring_interval_count, 1), 1)) AS mrr
FROM stripe_subscriptions s
JOIN stripe_subscription_items i USING (subscription_id)
JOIN stripe_prices p ON p.price_id = i.price_id
WHERE s.status IN {sql_in(SubscriptionStatus.CHARGED)} GROUP BY p.currency ORDER BY p.currency
"""


def refresh_billing_daily(conn: duckdb.DuckDBPyConnection, now: datetime) -> dict[str, Any]:
    """Rebuilds billing_daily; returns the figures of `now`'s day plus the current MRR and
    subscriptions by status (for the materialization's metadata, which the UI plots)."""
    conn.execute("DELETE FROM billing_daily")
    conn.execute(_DAILY)
    cur = conn.execute("SELECT * FROM billing_daily WHERE day = ?", [now.date()])
    row = cur.fetchone()
    figures: dict[str, Any] = {"day": now.date().isoformat()}
    names = [d[0] for d in cur.description]
    figures.update({n: (int(v) if v is not None else 0) for n, v in zip(names, row or [None] * len(names))
                    if n != "day"})
    for currency, mrr in conn.execute(_MRR).fetchall():
        figures[f"mrr_{currency}"] = round(float(mrr or 0) / 100, 2)
    for status, n in conn.execute("SELECT status, count(*) FROM stripe_subscriptions GROUP BY 1 ORDER BY 1").fetchall():
        figures[f"subscriptions_{status}"] = n
    return figures


_LEAKS = f"""
INSERT INTO billing_leaks BY NAME
SELECT 'subscription for a deleted organisation' AS leak, o.id AS organization_id, o.name AS organization_name,
       s.subscription_id, s.status, now() AS detected_at
FROM stripe_subscriptions s JOIN organizations o ON o.id = s.organization_id
WHERE s.status IN {LIVE} AND o.deleted_at IS NOT NULL
UNION ALL
SELECT 'subscription for a community organisation', o.id, o.name, s.subscription_id, s.status, now()
FROM stripe_subscriptions s JOIN organizations o ON o.id = s.organization_id
WHERE s.status IN {LIVE} AND o.deleted_at IS NULL AND o.type = '{OrganizationType.COMMUNITY}'
UNION ALL
SELECT 'company organisation past its grace period without an active subscription', o.id, o.name,
       NULL, NULL, now()
FROM organizations o
WHERE o.type = '{OrganizationType.COMPANY}' AND o.deleted_at IS NULL AND o.created < ?::TIMESTAMPTZ
  AND NOT EXISTS (SELECT 1 FROM stripe_subscriptions s WHERE s.organization_id = o.id AND s.status IN {LIVE})
"""


def refresh_billing_leaks(conn: duckdb.DuckDBPyConnection, now: datetime) -> list[tuple]:
    conn.execute("DELETE FROM billing_leaks")
    conn.execute(_LEAKS, [now - timedelta(days=GRACE_DAYS)])
    return conn.execute("SELECT leak, organization_id, organization_name, subscription_id, status"
                        " FROM billing_leaks ORDER BY leak, organization_id").fetchall()


# --- checks ----------------------------------------------------------------------------------

def live_without_customer_or_org(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    return conn.execute(f"""
        SELECT s.subscription_id,
               CASE WHEN c.customer_id IS NULL THEN 'no customer row' ELSE 'no organisation' END
        FROM stripe_subscriptions s
        LEFT JOIN stripe_customers c ON c.customer_id = s.customer_id
        LEFT JOIN organizations o ON o.id = s.organization_id
        WHERE s.status IN {LIVE} AND (c.customer_id IS NULL OR o.id IS NULL)
        ORDER BY 1""").fetchall()


def active_here_canceled_in_stripe(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Subscriptions the last reconciliation saw canceled in Stripe that the tables still hold live."""
    return conn.execute(f"""
        WITH last AS (SELECT run_id FROM billing_reconcile_runs WHERE finished_at IS NOT NULL
                      AND mode IN {sql_in((ReconcileMode.FULL, ReconcileMode.INCREMENTAL))} ORDER BY finished_at DESC LIMIT 1)
        SELECT DISTINCT d.object_id, s.status FROM billing_drift d
        JOIN last USING (run_id)
        JOIN stripe_subscriptions s ON s.subscription_id = d.object_id
        WHERE d.object_type = 'subscription' AND d.field = 'status' AND d.stripe_value = '{SubscriptionStatus.CANCELED}'
          AND s.status IN {LIVE} ORDER BY 1""").fetchall()


def last_run_unrepaired(conn: duckdb.DuckDBPyConnection) -> tuple[str | None, int]:
    row = conn.execute("SELECT run_id, coalesce(unrepaired, 0) FROM billing_reconcile_runs"
                       " WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1").fetchone()
    return (row[0], int(row[1])) if row else (None, 0)


def payment_failure_rate(conn: duckdb.DuckDBPyConnection, now: datetime, days: int = 7) -> tuple[float, int, int]:
    """(failed / attempted, failed, attempted) over PaymentIntents created in the last `days`."""
    failed, attempted = conn.execute(f"""
        SELECT count(*) FILTER (WHERE {FAILED_PI}),
               count(*) FILTER (WHERE status = 'succeeded' OR ({FAILED_PI}))
        FROM stripe_payments WHERE kind = 'payment_intent' AND created >= ?::TIMESTAMPTZ""",
                                     [now - timedelta(days=days)]).fetchone()
    return (failed / attempted if attempted else 0.0), int(failed), int(attempted)
