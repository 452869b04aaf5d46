"""Events: one per state change, kept 30 days of emulator time, listed like other objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devstack.local_stripe.listing import list_page
from devstack.local_stripe.store import Table, new_id

RETENTION_SECONDS = 30 * 86400


def previous_attributes(old: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The top-level fields that changed, with their old values (Stripe's data.previous_attributes)."""
    prev = {}
    for key in set(old) | set(new):
        before, after = old.get(key, defaults.get(key)), new.get(key, defaults.get(key))
        if before != after:
            prev[key] = before
    return prev


class EventLog:
    def __init__(self, table: Table, now: Callable[[], int]) -> None:
        self.table = table
        self.now = now
        self._pruned = 0  # position below which every event has been dropped

    def record(self, type_: str, snapshot: dict[str, Any], previous: dict[str, Any] | None,
               request: dict[str, Any], api_version: str, pending_webhooks: int) -> dict[str, Any]:
        data: dict[str, Any] = {"object": snapshot}
        if previous is not None:
            data["previous_attributes"] = previous
        event = {"id": new_id("event"), "object": "event", "api_version": api_version, "created": self.now(),
                 "data": data, "livemode": False, "pending_webhooks": pending_webhooks,
                 "request": request, "type": type_}
        self.table.add(event)
        return event

    def prune(self) -> int:
        """Drops events older than 30 days of emulator time; returns how many went."""
        cutoff = self.now() - RETENTION_SECONDS
        dropped = 0
        order, created = self.table.order, self.table.created
        while self._pruned < len(order) and created[self._pruned] < cutoff:
            if self.table.objects.pop(order[self._pruned], None) is not None:
                dropped += 1
            self._pruned += 1
        return dropped

    def page(self, params: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        self.prune()
        wanted: set[str] = set()
        if params.get("type"):
            wanted.add(str(params["type"]))
        types = params.get("types")
        if types:
            wanted.update(types if isinstance(types, list) else [types])
        predicate, where = None, None
        if wanted:
            exact = {t for t in wanted if not t.endswith("*")}
            prefixes = tuple(t[:-1] for t in wanted if t.endswith("*"))  # Stripe accepts `customer.*`
            predicate = lambda e: e["type"] in exact or (bool(prefixes) and e["type"].startswith(prefixes))  # noqa: E731
            if not prefixes:
                where = {"type": sorted(exact)}
        return list_page(self.table, params, "/v1/events", predicate, where)
