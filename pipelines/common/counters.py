"""One counters type for every consumer and the drain loop; it becomes Dagster metadata."""

from __future__ import annotations

from collections import Counter


class Counters(Counter[str]):
    """Named counts (messages, events_new, quarantined, sent, ...). Adding two sums them."""

    def as_metadata(self) -> dict[str, int]:
        return {name.replace("-", "_"): int(n) for name, n in sorted(self.items())}
