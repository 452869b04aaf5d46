"""Seat sync: each live subscription's quantity follows its organisation's member count.

Pure planning (`plan`) is separate from the calls (`sync_seats`): a canceled subscription is
skipped, a subscription already at the right quantity costs no call, and one organisation's
failure is recorded and does not stop the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import stripe

from pipelines.billing.subscriptions import set_item_quantity
from pipelines.billing.vocab import SubscriptionStatus

SYNCED_STATUSES = SubscriptionStatus.LIVE


@dataclass(frozen=True)
class SeatTarget:
    organization_id: str
    subscription_id: str
    item_id: str | None
    status: str
    quantity: int | None
    members: int


@dataclass
class SeatReport:
    changed: list[tuple[str, str, int, int]] = field(default_factory=list)   # org, subscription, before, after
    unchanged: int = 0
    skipped: list[tuple[str, str, str]] = field(default_factory=list)        # org, subscription, why
    failed: list[tuple[str, str, str]] = field(default_factory=list)         # org, subscription, error

    def as_metadata(self) -> dict:
        return {"changed": len(self.changed), "unchanged": self.unchanged, "skipped": len(self.skipped),
                "failed": len(self.failed)}


def wanted_quantity(members: int) -> int:
    """A subscription bills at least one seat, even while an organisation has no members recorded."""
    return max(1, int(members))


def _error_text(exc: Exception) -> str:
    """What failed, without request bodies or keys: Stripe's code and its user-facing message."""
    if isinstance(exc, stripe.StripeError):
        code = getattr(exc, "code", None) or type(exc).__name__
        return f"{type(exc).__name__} ({code}, HTTP {exc.http_status}): {exc.user_message or ''}".strip()
    return f"{type(exc).__name__}: {exc}"[:300]


def sync_seats(client: stripe.StripeClient, targets: Iterable[SeatTarget], *, scope: str | None = None,
               log=None) -> SeatReport:
    report = SeatReport()
    for t in targets:
        if t.status not in SYNCED_STATUSES:
            report.skipped.append((t.organization_id, t.subscription_id, f"status {t.status}"))
            continue
        if not t.item_id:
            report.skipped.append((t.organization_id, t.subscription_id, "no subscription item recorded"))
            continue
        after = wanted_quantity(t.members)
        if t.quantity == after:
            report.unchanged += 1
            continue
        try:
            set_item_quantity(client, subscription_id=t.subscription_id, item_id=t.item_id,
                              before=int(t.quantity or 0), after=after, scope=scope)
        except Exception as exc:  # isolate: one organisation's failure must not stop the others
            report.failed.append((t.organization_id, t.subscription_id, _error_text(exc)))
            if log:
                log(f"seat sync failed for organisation {t.organization_id} ({t.subscription_id}): {_error_text(exc)}")
            continue
        report.changed.append((t.organization_id, t.subscription_id, int(t.quantity or 0), after))
    return report


_TARGETS_SQL = """
    WITH members AS (
        SELECT organization_id, count(*) AS n FROM organization_members GROUP BY organization_id
    ), items AS (
        SELECT subscription_id, min(item_id) AS item_id, count(*) AS n_items, sum(quantity) AS quantity
        FROM stripe_subscription_items GROUP BY subscription_id
    )
    SELECT s.organization_id, s.subscription_id, CASE WHEN i.n_items = 1 THEN i.item_id END, s.status,
           i.quantity, coalesce(m.n, 0)
    FROM stripe_subscriptions s
    JOIN organizations o ON o.id = s.organization_id AND o.deleted_at IS NULL
    LEFT JOIN items i ON i.subscription_id = s.subscription_id
    LEFT JOIN members m ON m.organization_id = s.organization_id
    ORDER BY s.organization_id, s.subscription_id
"""


def seat_targets(conn) -> list[SeatTarget]:
    """Every organisation's subscriptions with their recorded quantity and the member count.
    (Canceled ones are listed too: `sync_seats` skips them and says so.)"""
    return [SeatTarget(str(r[0]), r[1], r[2], r[3], None if r[4] is None else int(r[4]), int(r[5]))
            for r in conn.execute(_TARGETS_SQL).fetchall()]
