"""The email status state machine, as a table.

Per message (email_messages.status), with Warehouse's semantics (warehouse/email/ses/models.py)
for every pair Warehouse defines. Warehouse raises on the other pairs and the notification is
lost; here each of them has an explicit outcome, marked UNEXPECTED, so nothing is dropped and
an out-of-order arrival still ends in a sensible state. "sent" is Warehouse's "Accepted".

Address effects (address_health.py) ride on the transition, as in Warehouse:
RESET zeroes the soft-bounce count, COUNT adds one soft bounce (more than 5 unverifies),
HARD and COMPLAINT unverify the address.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.email.ledger import MessageStatus as S

# The states SES notifications move a message between. Dispatch's own (S.NOT_ACCEPTED): no SES
# notification should arrive for them; recorded, never changed.
STATES = S.ACCEPTED

DELIVERY, HARD_BOUNCE, SOFT_BOUNCE, COMPLAINT = "delivery", "hard-bounce", "soft-bounce", "complaint"
INPUTS = (DELIVERY, HARD_BOUNCE, SOFT_BOUNCE, COMPLAINT)

RESET, COUNT, HARD, SPAM = "reset-transient", "count-soft-bounce", "unverify:hard-bounce", "unverify:spam-complaint"

TRANSITION, RECORDED, UNEXPECTED = "transition", "recorded", "unexpected"


@dataclass(frozen=True)
class Rule:
    next_status: str
    effects: tuple[str, ...]
    kind: str           # TRANSITION, RECORDED (status kept by design) or UNEXPECTED (not in Warehouse)
    why: str = ""


R = Rule
TABLE: dict[tuple[str, str], Rule] = {
    (S.SENT, DELIVERY):          R(S.DELIVERED, (RESET,), TRANSITION),
    (S.SENT, HARD_BOUNCE):       R(S.BOUNCED, (RESET, HARD), TRANSITION),
    (S.SENT, SOFT_BOUNCE):       R(S.SOFT_BOUNCED, (COUNT,), TRANSITION),
    (S.SENT, COMPLAINT):         R(S.COMPLAINED, (SPAM,), UNEXPECTED, "a complaint proves delivery; its Delivery is late"),

    (S.SOFT_BOUNCED, DELIVERY):  R(S.DELIVERED, (RESET,), TRANSITION),
    (S.SOFT_BOUNCED, HARD_BOUNCE): R(S.BOUNCED, (RESET, HARD), UNEXPECTED, "SES gave up after retrying"),
    (S.SOFT_BOUNCED, SOFT_BOUNCE): R(S.SOFT_BOUNCED, (COUNT,), UNEXPECTED, "another transient failure"),
    (S.SOFT_BOUNCED, COMPLAINT): R(S.COMPLAINED, (SPAM,), UNEXPECTED, "a complaint proves delivery"),

    (S.DELIVERED, DELIVERY):     R(S.DELIVERED, (), RECORDED, "delivery reported twice"),
    (S.DELIVERED, HARD_BOUNCE):  R(S.BOUNCED, (RESET, HARD), TRANSITION),
    (S.DELIVERED, SOFT_BOUNCE):  R(S.DELIVERED, (), RECORDED, "out-of-office reply"),
    (S.DELIVERED, COMPLAINT):    R(S.COMPLAINED, (SPAM,), TRANSITION),

    (S.BOUNCED, DELIVERY):       R(S.DELIVERED, (RESET,), TRANSITION, "the address stays unverified"),
    (S.BOUNCED, HARD_BOUNCE):    R(S.BOUNCED, (), UNEXPECTED, "bounce reported twice"),
    (S.BOUNCED, SOFT_BOUNCE):    R(S.BOUNCED, (), UNEXPECTED, "soft bounce after a hard one"),
    (S.BOUNCED, COMPLAINT):      R(S.COMPLAINED, (SPAM,), UNEXPECTED, "a complaint proves delivery"),

    (S.COMPLAINED, DELIVERY):    R(S.COMPLAINED, (), UNEXPECTED, "complaint is final; a late Delivery"),
    (S.COMPLAINED, HARD_BOUNCE): R(S.COMPLAINED, (), UNEXPECTED, "complaint is final"),
    (S.COMPLAINED, SOFT_BOUNCE): R(S.COMPLAINED, (), UNEXPECTED, "complaint is final"),
    (S.COMPLAINED, COMPLAINT):   R(S.COMPLAINED, (), UNEXPECTED, "complaint reported twice"),
}
for _status in S.NOT_ACCEPTED:
    for _signal in INPUTS:
        TABLE[(_status, _signal)] = R(_status, (), UNEXPECTED, "not sent through SES by dispatch")
del _status, _signal

assert all((s, i) in TABLE for s in S for i in INPUTS)


def step(status: str, signal: str | None) -> Rule:
    """The rule for one event; record-only events (signal None) and unknown statuses keep the status."""
    if signal is None:
        return Rule(status, (), RECORDED, "event without a status input")
    rule = TABLE.get((status, signal))
    if rule is None:
        return Rule(status, (), UNEXPECTED, f"unknown status {status!r}")
    return rule
