"""Objects by type: ordered by creation, indexed by id, so a page of a list costs O(limit).

Each table keeps an append-only order of ids, their `created` (non-decreasing: the emulator
clock never goes back) and a position index. Deleted ids stay in the order as holes.

Objects are kept serialised (orjson bytes of the sparse dict `shapes.render` completes): about
a third of the memory of live dicts, which is what lets 100,000 subscriptions with their
customers, invoices and payments fit, and every read is a private copy, so nothing a caller
does to an object it read can change what is stored or what an event recorded.
"""

from __future__ import annotations

import bisect
import secrets
import string
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from devstack.local_stripe.errors import missing
from devstack.local_stripe.shapes import Sparse

_ALPHABET = string.ascii_letters + string.digits

PREFIXES: dict[str, str] = {
    "customer": "cus", "product": "prod", "price": "price", "subscription": "sub",
    "subscription_item": "si", "checkout.session": "cs_test", "billing_portal.session": "bps",
    "payment_method": "pm", "setup_intent": "seti", "invoice": "in", "line_item": "il",
    "payment_intent": "pi", "charge": "ch", "refund": "re", "dispute": "dp", "event": "evt",
    "test_helpers.test_clock": "clock", "credit_note": "cn",
}
TYPE_BY_PREFIX = {v: k for k, v in PREFIXES.items()}

HUMAN_NAMES = {"checkout.session": "checkout.session", "billing_portal.session": "billing portal session",
               "payment_method": "PaymentMethod", "payment_intent": "payment_intent",
               "setup_intent": "setup_intent", "test_helpers.test_clock": "test clock"}


def _pack(obj: dict[str, Any]) -> str:
    # decoded to str: orjson's bytes keep the slack of its growth buffer (8 KiB and more each)
    return orjson.dumps(obj).decode()


def new_id(object_name: str) -> str:
    return f"{PREFIXES[object_name]}_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def type_of_id(object_id: str) -> str | None:
    if object_id.startswith("cs_test_"):
        return "checkout.session"
    return TYPE_BY_PREFIX.get(object_id.split("_", 1)[0])


def _subscription_of(obj: dict[str, Any]) -> str | None:
    parent = obj.get("parent") or {}
    return (parent.get("subscription_details") or {}).get("subscription")


# Secondary indexes: field -> how to read it. A list filtered on one of them walks only the
# positions of matching objects, so `?customer=` stays O(limit) at 100,000 objects.
INDEXES: dict[str, dict[str, Callable[[dict[str, Any]], Any]]] = {
    "subscription": {"customer": lambda o: o.get("customer")},
    "invoice": {"customer": lambda o: o.get("customer"), "subscription": _subscription_of},
    "payment_intent": {"customer": lambda o: o.get("customer")},
    "charge": {"customer": lambda o: o.get("customer"), "payment_intent": lambda o: o.get("payment_intent")},
    "payment_method": {"customer": lambda o: o.get("customer")},
    "setup_intent": {"customer": lambda o: o.get("customer")},
    "checkout.session": {"customer": lambda o: o.get("customer")},
    "refund": {"charge": lambda o: o.get("charge")},
    "credit_note": {"customer": lambda o: o.get("customer"), "invoice": lambda o: o.get("invoice")},
    "event": {"type": lambda o: o.get("type")},
}


class Table:
    def __init__(self, name: str) -> None:
        self.name = name
        self.objects: dict[str, str] = {}
        self.order: list[str] = []
        self.created: list[int] = []
        self.position: dict[str, int] = {}
        self.readers = INDEXES.get(name, {})
        self.index: dict[str, dict[Any, list[int]]] = {field: {} for field in self.readers}

    def _index(self, obj: dict[str, Any], pos: int) -> None:
        for field, read in self.readers.items():
            value = read(obj)
            if value is None:
                continue
            positions = self.index[field].setdefault(value, [])
            if not positions or positions[-1] < pos:
                positions.append(pos)
            else:
                i = bisect.bisect_left(positions, pos)
                if i == len(positions) or positions[i] != pos:
                    positions.insert(i, pos)

    def positions(self, field: str, value: Any) -> list[int]:
        """Positions of objects whose field had value (check the object: it may have changed since)."""
        return self.index[field].get(value, [])

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
        self.objects[oid] = _pack(obj)
        self._index(obj, self.position[oid])
        return obj

    def get(self, oid: str) -> Sparse | None:
        raw = self.objects.get(oid)
        return None if raw is None else Sparse(orjson.loads(raw))

    def __contains__(self, oid: str) -> bool:
        return oid in self.objects

    def require(self, oid: str, param: str = "id") -> Sparse:
        obj = self.get(oid)
        if obj is None:
            raise missing(HUMAN_NAMES.get(self.name, self.name), oid, param)
        return obj

    def put(self, obj: dict[str, Any]) -> None:
        self.objects[obj["id"]] = _pack(obj)
        if self.readers:
            self._index(obj, self.position[obj["id"]])

    def remove(self, oid: str) -> Sparse | None:
        raw = self.objects.pop(oid, None)
        return None if raw is None else Sparse(orjson.loads(raw))

    def values(self) -> Iterator[Sparse]:
        return (Sparse(orjson.loads(raw)) for raw in self.objects.values())

    def newest_first(self, start: int | None = None, stop: int = 0) -> Iterator[dict[str, Any]]:
        """Objects from position start-1 down to stop (all when start is None)."""
        i = len(self.order) if start is None else start
        while i > stop:
            i -= 1
            raw = self.objects.get(self.order[i])
            if raw is not None:
                yield Sparse(orjson.loads(raw))

    def at_positions(self, positions: Iterable[int]) -> Iterator[Sparse]:
        for i in positions:
            raw = self.objects.get(self.order[i])
            if raw is not None:
                yield Sparse(orjson.loads(raw))

    def oldest_first(self, start: int, stop: int | None = None) -> Iterator[dict[str, Any]]:
        stop = len(self.order) if stop is None else stop
        for i in range(start, stop):
            raw = self.objects.get(self.order[i])
            if raw is not None:
                yield Sparse(orjson.loads(raw))

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
