"""Dispatching billing notices: the DuckDB side of dunning.py.

`send_event_notices` is what the stripe-events consumer's `after_commit` (consumer.py) calls with
the batch's events; `send_subscription_required` is the daily schedule's. Both dispatch first and record the
request ids in `billing_notices` after, so a crash in between re-dispatches the same request id,
which the email pipeline sends once. `connect` is a DuckDB resource's `connect` or
a `Store.transaction`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import duckdb

from pipelines.billing import dunning
from pipelines.billing.dunning import Contact, OrgWithoutSubscription
from pipelines.billing.vocab import OrganizationType, SubscriptionStatus, sql_in
from pipelines.email.request import EmailRequest
from pipelines.store.write import STR, arrow, insert, with_rows


class NoticeQueue(Protocol):
    """Where notices go: the email-requests queue."""

    def send(self, bodies: Iterable[str]) -> int: ...


Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]

# The billing contact: the organisation's billing email (else the customer's), addressed as its
# earliest owner's user id (organization_members.role 'Owner'), else the organisation name.
_CONTACT_SQL = """
    SELECT o.id, o.name, coalesce(o.billing_email, c.billing_email),
           coalesce((SELECT m.user_id FROM organization_members m
                     WHERE m.organization_id = o.id AND lower(coalesce(m.role, '')) = 'owner'
                     ORDER BY m.joined_at NULLS LAST, m.user_id LIMIT 1), o.name)
    FROM stripe_customers c JOIN organizations o ON o.id = c.organization_id
    WHERE c.customer_id = ?
"""


class TablesDirectory:
    """dunning.Directory over the billing tables."""

    def __init__(self, conn: duckdb.DuckDBPyConnection):
        self.conn = conn

    def contact_for_customer(self, customer_id: str) -> Contact | None:
        row = self.conn.execute(_CONTACT_SQL, [customer_id]).fetchone()
        if row is None or not row[2]:
            return None
        return Contact(organization_id=row[0], organization_name=row[1], email=row[2], username=row[3])

    def invoice_status(self, invoice_id: str) -> str | None:
        row = self.conn.execute("SELECT status FROM stripe_invoices WHERE invoice_id = ?", [invoice_id]).fetchone()
        return row[0] if row else None

    def invoice(self, invoice_id: str) -> Mapping[str, Any] | None:
        cur = self.conn.execute("SELECT * FROM stripe_invoices WHERE invoice_id = ?", [invoice_id])
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row)) if row else None

    def subscription_status(self, subscription_id: str) -> str | None:
        row = self.conn.execute("SELECT status FROM stripe_subscriptions WHERE subscription_id = ?",
                                [subscription_id]).fetchone()
        return row[0] if row else None

    def plan_name(self, subscription: Mapping[str, Any]) -> str:
        items = ((subscription.get("items") or {}).get("data")) or []
        price = (items[0].get("price") if items else None) or {}
        product = price.get("product") if isinstance(price, Mapping) else None
        product_id = product if isinstance(product, str) else (product or {}).get("id")
        if product_id:
            row = self.conn.execute("SELECT name FROM stripe_products WHERE product_id = ?", [product_id]).fetchone()
            if row and row[0]:
                return row[0]
        return (price.get("nickname") if isinstance(price, Mapping) else None) or "Organization subscription"


@dataclass
class NoticeReport:
    dispatched: list[str] = field(default_factory=list)
    already_sent: int = 0
    skipped: list[dunning.Skipped] = field(default_factory=list)

    def as_metadata(self) -> dict[str, int]:
        return {"notices_dispatched": len(self.dispatched), "notices_already_sent": self.already_sent,
                "notices_skipped": len(self.skipped)}


def _dispatch(connect: Connect, queue: NoticeQueue, requests: list[EmailRequest], event_ids: Mapping[str, str],
              org_ids: Mapping[str, str], report: NoticeReport) -> None:
    with connect() as conn:
        ids = arrow(request_id=(STR, [r.request_id for r in requests]))
        done = {r[0] for r in with_rows(conn, "SELECT request_id FROM billing_notices WHERE request_id IN "
                                              "(SELECT request_id FROM rows)", ids).fetchall()} if requests else set()
    todo = [r for r in requests if r.request_id not in done]
    report.already_sent += len(requests) - len(todo)
    if not todo:
        return
    queue.send([r.to_json() for r in todo])
    with connect() as conn:
        insert(conn, "billing_notices", arrow(
            request_id=(STR, [r.request_id for r in todo]), kind=(STR, [r.kind for r in todo]),
            event_id=(STR, [event_ids.get(r.request_id) for r in todo]),
            organization_id=(STR, [org_ids.get(r.request_id) for r in todo])), on_conflict="(request_id) DO NOTHING")
    report.dispatched += [r.request_id for r in todo]


def as_event(event: Any) -> Mapping[str, Any]:
    """A Stripe event as dunning reads it: the event JSON itself, or the ingestion's parsed event
    (pipelines.billing.envelope.StripeEvent: id, type, created, object, previous_attributes)."""
    if isinstance(event, Mapping):
        return event
    return {"id": event.id, "type": event.type, "created": event.created,
            "data": {"object": event.object, "previous_attributes": getattr(event, "previous_attributes", None)}}


def send_event_notices(connect: Connect, events: Iterable[Any], queue: NoticeQueue) -> NoticeReport:
    """Dispatch the notices these Stripe events call for, each once (see dunning.py).

    The Stripe ingest consumer calls this from `after_commit` with every event of the batch
    (duplicates too), passing `store.transaction` as `connect`."""
    report = NoticeReport()
    events = [e for e in map(as_event, events) if e.get("type") in dunning.NOTICE_EVENT_TYPES]
    if not events:
        return report
    with connect() as conn:
        requests = dunning.notices_for(events, TablesDirectory(conn), report.skipped)
    event_ids = {r.request_id: r.request_id.split(":")[1] for r in requests}
    _dispatch(connect, queue, requests, event_ids, {}, report)
    return report


_WITHOUT_SUBSCRIPTION_SQL = f"""
    SELECT o.id, o.name, o.billing_email,
           coalesce((SELECT m.user_id FROM organization_members m
                     WHERE m.organization_id = o.id AND lower(coalesce(m.role, '')) = 'owner'
                     ORDER BY m.joined_at NULLS LAST, m.user_id LIMIT 1), o.name)
    FROM organizations o
    WHERE o.type = '{OrganizationType.COMPANY}' AND o.deleted_at IS NULL AND o.created < ?
      AND o.billing_email IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM stripe_subscriptions s
                      WHERE s.organization_id = o.id AND s.status IN {sql_in(SubscriptionStatus.SUBSCRIBED)})
    ORDER BY o.id
"""


def orgs_without_subscription(conn: duckdb.DuckDBPyConnection, now: datetime,
                              grace_days: int = dunning.GRACE_DAYS) -> list[OrgWithoutSubscription]:
    rows = conn.execute(_WITHOUT_SUBSCRIPTION_SQL, [now - timedelta(days=grace_days)]).fetchall()
    return [OrgWithoutSubscription(r[0], r[1], r[2], r[3]) for r in rows]


def send_subscription_required(connect: Connect, queue: NoticeQueue, now: datetime,
                               grace_days: int = dunning.GRACE_DAYS) -> NoticeReport:
    report = NoticeReport()
    with connect() as conn:
        orgs = orgs_without_subscription(conn, now, grace_days)
    requests = dunning.subscription_required_notices(orgs, now.date())
    org_ids = {r.request_id: r.request_id.split(":")[1] for r in requests}
    _dispatch(connect, queue, requests, {}, org_ids, report)
    return report
