"""SES's bounce types and how delivery tracking classes them."""

from __future__ import annotations

from enum import StrEnum


class BounceType(StrEnum):
    PERMANENT = "Permanent"
    TRANSIENT = "Transient"
    UNDETERMINED = "Undetermined"


HARD_BOUNCE_TYPES = frozenset({BounceType.PERMANENT})
SOFT_BOUNCE_TYPES = frozenset({BounceType.TRANSIENT, BounceType.UNDETERMINED})
