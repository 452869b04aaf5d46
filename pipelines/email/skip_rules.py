"""Skip rules, applied in this order; the first that matches is recorded as the reason.

1. no-address     the recipient has no address
2. unverified     the address is not verified and the kind does not allow unverified
3. suppressed     address health says no (hard bounce, complaint, too many soft bounces)
4. repeat-window  same recipient and subject already sent (or being sent) within the window

Rules 1-2 need only the request; 3-4 need the ledger and are evaluated inside the claim
transaction (outbox.claim) so that the repeat window holds under concurrent runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

NO_ADDRESS = "no-address"
UNVERIFIED = "unverified"
SUPPRESSED = "suppressed"
REPEAT_WINDOW = "repeat-window"
REASONS = (NO_ADDRESS, UNVERIFIED, SUPPRESSED, REPEAT_WINDOW)


def skip_reason(*, address: str | None, verified: bool, allow_unverified: bool, suppressed: bool,
                last_sent_same_subject: datetime | None, repeat_window: timedelta | None,
                now: datetime) -> str | None:
    """The first rule that applies, or None to send."""
    if not address:
        return NO_ADDRESS
    if not verified and not allow_unverified:
        return UNVERIFIED
    if suppressed:
        return SUPPRESSED
    if repeat_window is not None and last_sent_same_subject is not None \
            and now - last_sent_same_subject < repeat_window:
        return REPEAT_WINDOW
    return None
