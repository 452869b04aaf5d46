"""The emulator's time: wall time plus an offset that /_control/advance moves forward.

Test clocks (test_helpers.test_clock) keep their own frozen time; objects created for a
customer on a test clock live on that clock's time.
"""

from __future__ import annotations

import calendar
import datetime as dt
import time


class Clock:
    def __init__(self) -> None:
        self.offset = 0

    def now(self) -> int:
        return int(time.time()) + self.offset

    def advance(self, seconds: int) -> int:
        self.offset += seconds
        return self.now()


def add_interval(ts: int, interval: str, count: int = 1, anchor_day: int | None = None) -> int:
    """ts moved by count intervals (day/week/month/year); months clamp to the month's end and
    return to the anchor day when they can, as Stripe's billing cycle does."""
    if interval == "day":
        return ts + 86400 * count
    if interval == "week":
        return ts + 7 * 86400 * count
    d = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    months = count * (12 if interval == "year" else 1)
    if interval not in ("month", "year"):
        raise ValueError(f"unknown interval {interval!r}")
    total = d.month - 1 + months
    year, month = d.year + total // 12, total % 12 + 1
    day = min(anchor_day or d.day, calendar.monthrange(year, month)[1])
    return int(d.replace(year=year, month=month, day=day).timestamp())
