"""The emulator's state and the primitives every resource module uses: create, update (with
its event), render (every declared field) and expand. One lock guards it all."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from stripe._api_version import _ApiVersion

from devstack.local_stripe import shapes
from devstack.local_stripe.clock import Clock
from devstack.local_stripe.delivery import Deliverer, DeliveryConfig
from devstack.local_stripe.errors import invalid
from devstack.local_stripe.events import EventLog, previous_attributes
from devstack.local_stripe.faults import Faults
from devstack.local_stripe.idempotency import IdempotencyCache
from devstack.local_stripe.store import Store, new_id, type_of_id

API_VERSION = _ApiVersion.CURRENT

EVENT_PREFIX = {"subscription": "customer.subscription", "dispute": "charge.dispute",
                "test_helpers.test_clock": "test_helpers.test_clock"}

DUNNING_FINAL_ACTIONS = ("cancel", "unpaid", "past_due")


@dataclass
class EmulatorConfig:
    api_version: str = API_VERSION
    public_base: str = "http://127.0.0.1:12111"
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    # Dunning after a failed renewal: retries this many days after the first failure, then the
    # final action (Stripe's default retry schedule, with the "cancel the subscription" setting).
    retry_days: tuple[int, ...] = (3, 8, 15)
    dunning_final_action: str = "cancel"


class Emulator:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.lock = threading.RLock()
        self.faults = Faults()
        self.deliverer = Deliverer(self.config.delivery, self.faults)
        self.idempotency = IdempotencyCache()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.store = Store()
            self.clock = Clock()
            self.events = EventLog(self.store["event"], self.now)
            self.request: dict[str, Any] = {"id": None, "idempotency_key": None}
            self.api_version = self.config.api_version
            self.pm_behaviour: dict[str, str] = {}      # pm id -> succeed | decline | authenticate
            self.cycles: dict[str, dict[str, Any]] = {}  # subscription id -> billing cycle state
            self.deleted: dict[str, str] = {}            # deleted id -> object name
            self.checkout_data: dict[str, dict[str, Any]] = {}  # session id -> subscription_data
            self.acting_at: int | None = None  # set while catching up: the time things happen at
            self.quiet: set[str] = set()  # ids whose `updated` events are held back (being created)
            self.recording = True  # False while seeding bulk data: no events
            self.item_owner: dict[str, str] = {}  # subscription item id -> subscription id
            self.idempotency = IdempotencyCache()
            self.deliverer.clear()

    def close(self) -> None:
        self.deliverer.stop()

    # --- time -------------------------------------------------------------------------------

    def now(self, test_clock: str | None = None) -> int:
        if self.acting_at is not None:
            return self.acting_at
        if test_clock:
            clock = self.store["test_helpers.test_clock"].get(test_clock)
            if clock is not None:
                return int(clock["frozen_time"])
        return self.clock.now()

    @contextlib.contextmanager
    def happening_at(self, ts: int) -> Iterator[None]:
        """Everything inside (objects, events) is dated ts: a renewal that falls due while
        time is advanced happens at its due time, not at the end of the advance."""
        saved, self.acting_at = self.acting_at, ts
        try:
            yield
        finally:
            self.acting_at = saved

    def now_for(self, obj: dict[str, Any] | None) -> int:
        return self.now(obj.get("test_clock") if obj else None)

    # --- objects ----------------------------------------------------------------------------

    def create(self, name: str, fields: dict[str, Any], *, event: bool = True, created: int | None = None,
               oid: str | None = None) -> dict[str, Any]:
        obj = {"id": oid or new_id(name), "object": name, "livemode": False}
        if "created" in shapes.skeleton(name):
            obj["created"] = self.now() if created is None else created
        obj.update(fields)
        obj = shapes.compact(name, obj)
        self.store[name].add(obj)
        if event:
            self.emit(f"{EVENT_PREFIX.get(name, name)}.created", obj)
        return obj

    def update(self, obj: dict[str, Any], changes: dict[str, Any], event: str | None = "updated") -> dict[str, Any]:
        """A new version of obj with changes applied; records `<prefix>.<event>` with the
        previous attributes when anything changed."""
        new = shapes.compact(obj["object"], {**obj, **changes})
        if new == obj:
            return obj
        self.store[obj["object"]].put(new)
        if event and not (event == "updated" and new["id"] in self.quiet):
            previous = previous_attributes(obj, new, shapes.skeleton(obj["object"]))
            self.emit(f"{EVENT_PREFIX.get(obj['object'], obj['object'])}.{event}", new, previous)
        return new

    def emit(self, type_: str, obj: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any] | None:
        if not self.recording:
            return None
        active = self.deliverer.active
        event = self.events.record(type_, obj, previous, dict(self.request), self.api_version, int(active))
        if active:
            self.deliverer.submit(event["id"], type_, event["created"], orjson.dumps(self.render(event)).decode())
        return event

    def get(self, name: str, oid: Any, param: str = "id") -> dict[str, Any]:
        if not isinstance(oid, str) or not oid:
            raise invalid(f"Invalid {param}: must be an id string", param)
        return self.store[name].require(oid, param)

    # --- output -----------------------------------------------------------------------------

    def render(self, obj: dict[str, Any]) -> dict[str, Any]:
        """obj as the API shows it: every declared field, embedded objects in full."""
        name = obj.get("object")
        return shapes.render(name, obj) if name in shapes.RESOURCES else obj

    def expand(self, value: Any, paths: list[str]) -> Any:
        for path in paths:
            value = self._expand_path(value, path.split("."))
        return value

    def _expand_path(self, value: Any, parts: list[str]) -> Any:
        if not parts:
            if isinstance(value, str) and type_of_id(value):
                found = self.store.find(value)
                return self.render(found) if found is not None else value
            return value
        if isinstance(value, list):
            return [self._expand_path(v, parts) for v in value]
        if not isinstance(value, dict):
            return value
        head, rest = parts[0], parts[1:]
        if head not in value:
            return value
        out = dict(value)
        out[head] = self._expand_path(value[head], rest)
        if rest and isinstance(value[head], str):  # expanding through an id: expand it first
            out[head] = self._expand_path(self._expand_path(value[head], []), rest)
        return out
