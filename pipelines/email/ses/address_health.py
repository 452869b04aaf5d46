"""Address health, one row per address (email_addresses), driven by status_machine effects.

A hard bounce or a complaint unverifies; each soft bounce adds one and more than
MAX_TRANSIENT_BOUNCES unverifies; a delivery resets the count. Callers apply each event_id
once (email_events is keyed on it), so a redelivered notification never counts twice.
Only a change of `verified` yields a StatusChange.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from pipelines.email.ses.status_machine import COUNT, HARD, RESET, SPAM

MAX_TRANSIENT_BOUNCES = 5
REASONS = {HARD: "hard-bounce", SPAM: "spam-complaint"}


@dataclass(frozen=True)
class AddressState:
    address: str
    verified: bool = True
    unverify_reason: str | None = None
    transient_bounces: int = 0
    last_event_at: datetime | None = None


@dataclass(frozen=True)
class StatusChange:
    change_id: str       # the event_id that caused it
    address: str
    verified: bool
    reason: str | None
    changed_at: datetime


def apply_effects(state: AddressState, effects: tuple[str, ...], event_id: str,
                  at: datetime) -> tuple[AddressState, StatusChange | None]:
    new = state
    for effect in effects:
        if effect == RESET:
            new = replace(new, transient_bounces=0)
        elif effect == COUNT:
            new = replace(new, transient_bounces=new.transient_bounces + 1)
            if new.transient_bounces > MAX_TRANSIENT_BOUNCES and new.verified:
                new = replace(new, verified=False, unverify_reason="soft-bounce")
        elif effect in REASONS:
            if new.verified:
                new = replace(new, verified=False, unverify_reason=REASONS[effect])
        else:
            raise ValueError(f"unknown address effect {effect!r}")
    if new.last_event_at is None or at > new.last_event_at:
        new = replace(new, last_event_at=at)
    change = None
    if new.verified != state.verified:
        change = StatusChange(event_id, state.address, new.verified, new.unverify_reason, at)
    return new, change
