"""Helpers for the billing-ops tests: a guarded Stripe client on the local Stripe, and faults."""

from __future__ import annotations

import random
from typing import Any

from resources.stripe_client import StripeResource


def stripe_resource(local_stack: Any, **overrides: Any) -> StripeResource:
    """The project's Stripe resource on the local Stripe: rate limit out of the way, quick retries;
    `.http.calls` counts every attempt by endpoint, `.http.retries` the retried ones by reason."""
    settings = {"api_key": local_stack.env["STRIPE_API_KEY"], "webhook_secret": local_stack.env["STRIPE_WEBHOOK_SECRET"],
                "api_base": local_stack.stripe_base, "rate_limit_per_second": 10_000.0,
                "retry_initial_delay": 0.01, "retry_max_delay": 0.05, "max_network_retries": 5, **overrides}
    return StripeResource(**settings)


def seed_failing_first(rate: float, fail_first: int = 1) -> int:
    """A fault seed under which the local Stripe's first `fail_first` requests fail and the next
    one succeeds (it draws one random number per /v1 request while one fault rate is set)."""
    for seed in range(10_000):
        rng = random.Random(seed)
        draws = [rng.random() for _ in range(fail_first + 1)]
        if all(d < rate for d in draws[:fail_first]) and draws[fail_first] >= rate:
            return seed
    raise AssertionError("no seed found")


def inject(local_stack: Any, kind: str, fail_first: int = 1) -> None:
    """The next `fail_first` API requests answer 429 (kind '429') or 500 (kind '500')."""
    rate = 0.5
    key = "rate_429" if kind == "429" else "rate_5xx"
    local_stack.stripe_control("faults", **{key: rate, "seed": seed_failing_first(rate, fail_first)})


def clear_faults(local_stack: Any) -> None:
    local_stack.stripe_control("faults")


def calls(resource: StripeResource, endpoint: str | None = None) -> int:
    counted = resource.http.calls
    return sum(counted.values()) if endpoint is None else counted.get(endpoint, 0)


def billing_database(path: Any):
    """A DuckDBResource on `path` with every table of the project."""
    from pipelines.schema import database

    return database(str(path))


def store_of(db: Any):
    """The code location's `store` resource over a test's ledgers: a DuckDB resource (`database(path)`)
    or a PostgresDatabase carrying the `asset_store_url` its reports are published to."""
    from pipelines.store.postgres import PostgresDatabase
    from pipelines.store_resource import MailroomStore

    if isinstance(db, PostgresDatabase):
        return MailroomStore(engine="postgres", duckdb_path="unused.duckdb", database_url=db.path,
                             asset_store_url=db.asset_store_url)
    return MailroomStore(duckdb_path=db.path)


class CollectingQueue:
    """Stands in for the email-requests queue where a test looks only at what was dispatched."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def send(self, bodies) -> int:
        bodies = list(bodies)
        self.bodies.extend(bodies)
        return len(bodies)
