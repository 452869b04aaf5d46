"""Closed vocabularies of the billing tables, rendered into CHECK constraints (tables.py, with pipelines.store.vocab.check) and used by
the code that writes them, so a value outside the set is refused before it reaches DuckDB."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum, nonmember


class SubscriptionStatus(StrEnum):
    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"
    PAUSED = "paused"

    # still charging or granting access (past_due keeps access while Stripe retries the payment):
    # the organisation is in good standing, its seats are kept in sync
    LIVE = nonmember(frozenset({ACTIVE, TRIALING, PAST_DUE}))
    # the organisation has a subscription (no "subscription required" notice)
    SUBSCRIBED = nonmember(frozenset({ACTIVE, TRIALING}))
    # counted in MRR: being charged
    CHARGED = nonmember(frozenset({ACTIVE, PAST_DUE}))
    # final: nothing changes a subscription in these any more
    ENDED = nonmember(frozenset({CANCELED, INCOMPLETE_EXPIRED}))


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    UNCOLLECTIBLE = "uncollectible"
    VOID = "void"

    # nothing more will be collected
    SETTLED = nonmember(frozenset({PAID, VOID, UNCOLLECTIBLE}))


class EventOutcome(StrEnum):
    APPLIED = "applied"
    STALE = "stale"
    IGNORED_TENANT = "ignored-tenant"
    UNKNOWN_TYPE = "unknown-type"
    QUARANTINED = "quarantined"


class OrganizationType(StrEnum):
    COMPANY = "company"
    COMMUNITY = "community"


class PaymentKind(StrEnum):
    PAYMENT_INTENT = "payment_intent"
    CHARGE = "charge"
    REFUND = "refund"
    DISPUTE = "dispute"


def values(enum: type[StrEnum]) -> frozenset[str]:
    return frozenset(m.value for m in enum)


def sql_in(statuses: Iterable[str]) -> str:
    """A status set as an SQL list: ('a', 'b')."""
    return "(" + ", ".join(f"'{s}'" for s in sorted(statuses)) + ")"


class DriftAction(StrEnum):
    INSERTED = "inserted"        # Stripe has it, the tables did not: row written
    UPDATED = "updated"          # a column differed: row rewritten from Stripe
    DELETED = "deleted"          # the tables had it, Stripe does not: row removed (customers: flagged)
    UNREPAIRED = "unrepaired"    # could not be repaired (the reason says why); the drift check fails


class ReconcileMode(StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"
    RESYNC = "resync"            # an operator's resync_customer, or the re-read after an operator action
