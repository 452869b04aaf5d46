"""Faults on request: API errors at a given rate, and delivery duplicates, reordering, delays."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from typing import Any

from devstack.local_stripe.errors import StripeError, invalid


@dataclass
class Faults:
    rate_429: float = 0.0          # share of /v1 requests answered 429 (rate_limit)
    rate_5xx: float = 0.0          # share answered with a 5xx (status_5xx)
    status_5xx: int = 500
    duplicate_rate: float = 0.0    # share of deliveries sent twice
    reorder_window: int = 0        # deliveries are shuffled within windows of this many
    delay_rate: float = 0.0        # share of deliveries held back delay_seconds (wall time)
    delay_seconds: float = 0.0
    latency_seconds: float = 0.0   # every /v1 request is answered this much later (after taking its idempotency key)
    seed: int | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Faults:
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in params.items():
            if key not in known:
                raise invalid(f"unknown fault {key!r}; known: {', '.join(known)}", key)
            try:
                if raw is None:
                    values[key] = None
                elif key in ("status_5xx", "reorder_window", "seed"):
                    values[key] = int(raw)
                else:
                    values[key] = float(raw)
            except (TypeError, ValueError):
                raise invalid(f"fault {key} must be a number; got {raw!r}", key) from None
        for key in ("rate_429", "rate_5xx", "duplicate_rate", "delay_rate"):
            if not 0.0 <= values.get(key, 0.0) <= 1.0:
                raise invalid(f"fault {key} must be between 0 and 1", key)
        if not 500 <= values.get("status_5xx", 500) <= 599:
            raise invalid("fault status_5xx must be 500-599", "status_5xx")
        return cls(**values)

    def api_fault(self) -> StripeError | None:
        if self.rate_429 and self.rng.random() < self.rate_429:
            return StripeError(429, "invalid_request_error", "Too many requests hit the API too quickly "
                               "(injected by the local Stripe).", code="rate_limit", should_retry=True)
        if self.rate_5xx and self.rng.random() < self.rate_5xx:
            return StripeError(self.status_5xx, "api_error", "An unknown error occurred (injected by the "
                               "local Stripe).", should_retry=True)
        return None
