"""Objects by type: ordered by creation, indexed by id, so a page of a list costs O(limit).

Each table keeps an append-only order of ids, their `created` (non-decreasing: the emulator
clock never goes back) and a position index. Deleted ids stay in the order as holes. Objects
are the sparse dicts `shapes.render` completes; they are replaced, never mutated in place,
once an event may hold them (see Store.update).
"""

from __future__ import annotations

import bisect
import secrets
import string
from collections.abc import Callable, Iterator
from typing import Any

from devstack.local_stripe.errors import missing

_ALPHABET = string.ascii_letters + string.digits

PREFIXES: dict[str, str] = {
    "customer": "cus", "product": "prod", "price": "price", "subscription": "sub",
    "subscription_item": "si", "checkout.session": "cs_test", "billing_portal.session": "bps",
    "payment_method": "pm", "setup_intent": "seti", "invoice": "in", "line_item": "il",
    "payment_intent": "pi", "charge": "ch", "refund": "re", "dispute": "dp", "event": "evt",
    "test_helpers.test_clock": "clock",
}
TYPE_BY_PREFIX = {v: k for k, v in PREFIXES.items()}

HUMAN_NAMES = {"checkout.session": "checkout.session", "billing_portal.session": "billing portal session",
               "payment_method": "PaymentMethod", "payment_intent": "payment_intent",
               "setup_intent": "setup_intent", "test_helpers.test_clock": "test clock"}


def new_id(object_name: str) -> str:
    return f"{PREFIXES[object_name]}_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def type_of_id(object_id: str) -> str | None:
    if object_id.startswith("cs_test_"):
        return "checkout.session"
    return TYPE_BY_PREFIX.get(object_id.split("_", 1)[0])


class Table:
    def __init__(self, name: str) -> None:
        self.name = name
        self.objects: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.created: list[int] = []
        self.position: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.objects)

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        oid = obj["id"]
        created = int(obj.get("created") or 0)
        if self.created and created < self.created[-1]:
            created = self.created[-1]  # keeps the order sorted if a test clock started earlier
        self.position[oid] = len(self.order)
        self.order.append(oid)
        self.created.append(created)
        self.objects[oid] = obj
        return obj

    def get(self, oid: str) -> dict[str, Any] | None:
        return self.objects.get(oid)

    def require(self, oid: str, param: str = "id") -> dict[str, Any]:
        obj = self.objects.get(oid)
        if obj is None:
            raise missing(HUMAN_NAMES.get(self.name, self.name), oid, param)
        return obj

    def put(self, obj: dict[str, Any]) -> None:
        self.objects[obj["id"]] = obj

    def remove(self, oid: str) -> dict[str, Any] | None:
        return self.objects.pop(oid, None)

    def newest_first(self, start: int | None = None, stop: int = 0) -> Iterator[dict[str, Any]]:
        """Objects from position start-1 down to stop (all when start is None)."""
        i = len(self.order) if start is None else start
        while i > stop:
            i -= 1
            obj = self.objects.get(self.order[i])
            if obj is not None:
                yield obj

    def oldest_first(self, start: int, stop: int | None = None) -> Iterator[dict[str, Any]]:
        stop = len(self.order) if stop is None else stop
        for i in range(start, stop):
            obj = self.objects.get(self.order[i])
            if obj is not None:
                yield obj

    def bounds(self, created: dict[str, int]) -> tuple[int, int]:
        """Positions [lo, hi) of objects whose created matches created[gt|gte|lt|lte]."""
        lo, hi = 0, len(self.order)
        if "gt" in created:
            lo = max(lo, bisect.bisect_right(self.created, created["gt"]))
        if "gte" in created:
            lo = max(lo, bisect.bisect_left(self.created, created["gte"]))
        if "lt" in created:
            hi = min(hi, bisect.bisect_left(self.created, created["lt"]))
        if "lte" in created:
            hi = min(hi, bisect.bisect_right(self.created, created["lte"]))
        return lo, max(lo, hi)


class Store:
    def __init__(self) -> None:
        self.tables: dict[str, Table] = {name: Table(name) for name in PREFIXES}

    def __getitem__(self, name: str) -> Table:
        return self.tables[name]

    def find(self, object_id: str) -> dict[str, Any] | None:
        name = type_of_id(object_id)
        return self.tables[name].get(object_id) if name else None

    def where(self, name: str, predicate: Callable[[dict[str, Any]], bool]) -> Iterator[dict[str, Any]]:
        return (o for o in self.tables[name].oldest_first(0) if predicate(o))
