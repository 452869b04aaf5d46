"""Closed vocabularies of the billing tables, rendered into CHECK constraints (tables.py, with pipelines.store.vocab.check) and used by
the code that writes them, so a value outside the set is refused before it reaches DuckDB."""

from __future__ import annotations

from enum import StrEnum


class SubscriptionStatus(StrEnum):
    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"
    PAUSED = "paused"


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


class DriftAction(StrEnum):
    INSERTED = "inserted"        # Stripe has it, the tables did not: row written
    UPDATED = "updated"          # a column differed: row rewritten from Stripe
    DELETED = "deleted"          # the tables had it, Stripe does not: row removed (customers: flagged)
    UNREPAIRED = "unrepaired"    # could not be repaired (the reason says why); the drift check fails


class ReconcileMode(StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"
    RESYNC = "resync"            # an operator's resync_customer, or the re-read after an operator action
