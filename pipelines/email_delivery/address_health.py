"""Address health, one row per address (email_addresses), driven by status_machine effects.

A hard bounce or a complaint unverifies; each soft bounce adds one and more than
MAX_TRANSIENT_BOUNCES unverifies; a delivery resets the count. Callers apply each event_id
once (email_events is keyed on it), so a redelivered notification never counts twice.
Only a change of `verified` yields a StatusChange. Instants are anything ordered: aware
datetimes, or microseconds since the epoch as the batch ingest uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pipelines.email_delivery.status_machine import COUNT, HARD, RESET, SPAM

MAX_TRANSIENT_BOUNCES = 5
REASONS = {HARD: "hard-bounce", SPAM: "spam-complaint"}


@dataclass(frozen=True)
class AddressState:
    address: str
    verified: bool = True
    unverify_reason: str | None = None
    transient_bounces: int = 0
    last_event_at: datetime | int | None = None


@dataclass(frozen=True)
class StatusChange:
    change_id: str       # the event_id that caused it
    address: str
    verified: bool
    reason: str | None
    changed_at: datetime | int


def apply_effects(state: AddressState, effects: tuple[str, ...], event_id: str,
                  at: datetime | int) -> tuple[AddressState, StatusChange | None]:
    verified, reason, count = state.verified, state.unverify_reason, state.transient_bounces
    for effect in effects:
        if effect == RESET:
            count = 0
        elif effect == COUNT:
            count += 1
            if count > MAX_TRANSIENT_BOUNCES and verified:
                verified, reason = False, "soft-bounce"
        elif effect in REASONS:
            if verified:
                verified, reason = False, REASONS[effect]
        else:
            raise ValueError(f"unknown address effect {effect!r}")
    last = state.last_event_at if state.last_event_at is not None and state.last_event_at >= at else at
    new = AddressState(state.address, verified, reason, count, last)
    change = None
    if verified != state.verified:
        change = StatusChange(event_id, state.address, verified, reason, at)
    return new, change
