"""Closed vocabularies of the billing tables, rendered into CHECK constraints (tables.py) and used by
the code that writes them, so a value outside the set is refused before it reaches DuckDB."""

from __future__ import annotations

from enum import Enum


class SubscriptionStatus(str, Enum):
    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"
    PAUSED = "paused"


class EventOutcome(str, Enum):
    APPLIED = "applied"
    STALE = "stale"
    IGNORED_TENANT = "ignored-tenant"
    UNKNOWN_TYPE = "unknown-type"
    QUARANTINED = "quarantined"


class OrganizationType(str, Enum):
    COMPANY = "company"
    COMMUNITY = "community"


class PaymentKind(str, Enum):
    PAYMENT_INTENT = "payment_intent"
    CHARGE = "charge"
    REFUND = "refund"
    DISPUTE = "dispute"


def values(enum: type[Enum]) -> frozenset[str]:
    return frozenset(m.value for m in enum)


def check(column: str, enum: type[Enum], nullable: bool = False) -> str:
    """`CHECK (column IN ('a', 'b'))` for a DDL statement."""
    allowed = ", ".join(f"'{m.value}'" for m in enum)
    return f"CHECK ({column} IS NULL OR {column} IN ({allowed}))" if nullable else f"CHECK ({column} IN ({allowed}))"
