"""Address health: unverify on hard bounce, complaint, more than five soft bounces; reset on delivery."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pipelines.email_delivery.address_health import AddressState, apply_effects
from pipelines.email_delivery.status_machine import COUNT, HARD, RESET, SPAM

T = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("effect,reason", [(HARD, "hard-bounce"), (SPAM, "spam-complaint")])
def test_hard_bounce_and_complaint_unverify_once(effect, reason):
    state, change = apply_effects(AddressState("a@x"), (effect,), "e1", T)
    assert (state.verified, state.unverify_reason) == (False, reason)
    assert (change.change_id, change.address, change.verified, change.reason) == ("e1", "a@x", False, reason)
    again, change2 = apply_effects(state, (effect,), "e2", T)
    assert change2 is None and again.unverify_reason == reason


def test_more_than_five_soft_bounces_unverify_and_delivery_resets():
    state = AddressState("a@x")
    for i in range(5):
        state, change = apply_effects(state, (COUNT,), f"e{i}", T + timedelta(minutes=i))
        assert change is None and state.verified
    assert state.transient_bounces == 5
    reset, _ = apply_effects(state, (RESET,), "d", T)
    assert reset.transient_bounces == 0 and reset.verified
    state, change = apply_effects(state, (COUNT,), "e6", T + timedelta(hours=1))
    assert state.transient_bounces == 6
    assert (state.verified, state.unverify_reason, change.reason) == (False, "soft-bounce", "soft-bounce")
    assert state.last_event_at == T + timedelta(hours=1)


def test_reset_does_not_reverify_and_last_event_only_moves_forward():
    state, _ = apply_effects(AddressState("a@x"), (RESET, HARD), "e1", T)
    later, change = apply_effects(state, (RESET,), "e2", T - timedelta(days=1))
    assert change is None and not later.verified and later.last_event_at == T


def test_unknown_effect_raises():
    with pytest.raises(ValueError):
        apply_effects(AddressState("a@x"), ("explode",), "e", T)
