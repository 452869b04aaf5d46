"""Re-retrieve a Stripe object at the pinned API version (dj-stripe's approach to stale or
foreign-version payloads). `StripeRetriever` wraps a StripeClient; the ingest takes any
callable of the same shape, so unit tests can stand in for one call."""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol
from urllib.parse import quote

import stripe

from pipelines.billing.object_types import BY_NAME


class RetrieveError(RuntimeError):
    """Stripe could not answer (after the client's retries); the event is quarantined for replay."""


class Retriever(Protocol):
    def __call__(self, object_type: str, object_id: str) -> dict[str, Any] | None:
        """The object as Stripe has it now, or None when Stripe has no such object."""


class StripeRetriever:
    """Retrieves through the pinned client (its version, limiter, retries and call counter) at
    the registry's path for the type, with the expansions the type's table needs."""

    def __init__(self, client: stripe.StripeClient):
        self._client = client
        self.calls: Counter[str] = Counter()

    def __call__(self, object_type: str, object_id: str) -> dict[str, Any] | None:
        kind = BY_NAME.get(object_type)
        if kind is None:
            raise RetrieveError(f"no way to retrieve a {object_type!r} object")
        self.calls[object_type] += 1
        params = {"expand": list(kind.expand)} if kind.expand else {}
        try:
            return self._client.raw_request("get", f"{kind.path}/{quote(object_id, safe='')}", **params).data
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise RetrieveError(f"retrieving {object_type} {object_id}: {exc.user_message}") from None
        except stripe.StripeError as exc:
            raise RetrieveError(f"retrieving {object_type} {object_id}: {type(exc).__name__}: "
                                f"{exc.user_message}") from None
