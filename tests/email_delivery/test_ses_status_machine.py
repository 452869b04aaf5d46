"""The status machine: every (state, input) pair, including the ones Warehouse does not define."""

from __future__ import annotations

import itertools

import pytest

from pipelines.email.ledger import MessageStatus
from pipelines.email_delivery import status_machine as sm

C, H, R, S = sm.COUNT, sm.HARD, sm.RESET, sm.SPAM
# Written out independently of the module's table: (state, input) -> (next status, effects, kind).
EXPECTED = {
    ("sent", "delivery"): ("delivered", (R,), "transition"),
    ("sent", "hard-bounce"): ("bounced", (R, H), "transition"),
    ("sent", "soft-bounce"): ("soft-bounced", (C,), "transition"),
    ("sent", "complaint"): ("complained", (S,), "unexpected"),
    ("soft-bounced", "delivery"): ("delivered", (R,), "transition"),
    ("soft-bounced", "hard-bounce"): ("bounced", (R, H), "unexpected"),
    ("soft-bounced", "soft-bounce"): ("soft-bounced", (C,), "unexpected"),
    ("soft-bounced", "complaint"): ("complained", (S,), "unexpected"),
    ("delivered", "delivery"): ("delivered", (), "recorded"),
    ("delivered", "hard-bounce"): ("bounced", (R, H), "transition"),
    ("delivered", "soft-bounce"): ("delivered", (), "recorded"),
    ("delivered", "complaint"): ("complained", (S,), "transition"),
    ("bounced", "delivery"): ("delivered", (R,), "transition"),
    ("bounced", "hard-bounce"): ("bounced", (), "unexpected"),
    ("bounced", "soft-bounce"): ("bounced", (), "unexpected"),
    ("bounced", "complaint"): ("complained", (S,), "unexpected"),
    ("complained", "delivery"): ("complained", (), "unexpected"),
    ("complained", "hard-bounce"): ("complained", (), "unexpected"),
    ("complained", "soft-bounce"): ("complained", (), "unexpected"),
    ("complained", "complaint"): ("complained", (), "unexpected"),
}
for status in ("pending", "skipped", "failed"):
    for signal in sm.INPUTS:
        EXPECTED[(status, signal)] = (status, (), "unexpected")


@pytest.mark.parametrize("status,signal", list(itertools.product(sm.STATES + MessageStatus.NOT_ACCEPTED, sm.INPUTS)))
def test_every_pair(status, signal):
    rule = sm.step(status, signal)
    assert (rule.next_status, rule.effects, rule.kind) == EXPECTED[(status, signal)]


def test_table_covers_exactly_the_expected_pairs():
    assert set(sm.TABLE) == set(EXPECTED)


def test_warehouse_defined_transitions_are_never_marked_unexpected():
    warehouse = {("sent", "delivery"), ("sent", "hard-bounce"), ("sent", "soft-bounce"),
                 ("soft-bounced", "delivery"), ("delivered", "soft-bounce"), ("delivered", "delivery"),
                 ("delivered", "hard-bounce"), ("delivered", "complaint"), ("bounced", "delivery")}
    for pair, rule in sm.TABLE.items():
        assert (rule.kind != "unexpected") == (pair in warehouse), pair


@pytest.mark.parametrize("status", sm.STATES + MessageStatus.NOT_ACCEPTED)
def test_record_only_events_keep_every_status(status):
    rule = sm.step(status, None)
    assert (rule.next_status, rule.effects) == (status, ())


def test_unknown_status_keeps_status():
    rule = sm.step("mystery", "delivery")
    assert (rule.next_status, rule.effects, rule.kind) == ("mystery", (), "unexpected")
