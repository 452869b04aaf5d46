"""Re-retrieve a Stripe object at the pinned API version (dj-stripe's approach to stale or
foreign-version payloads). `StripeRetriever` wraps a StripeClient; the ingest takes any
callable of the same shape, so unit tests can stand in for one call."""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

import stripe


class RetrieveError(RuntimeError):
    """Stripe could not answer (after the client's retries); the event is quarantined for replay."""


class Retriever(Protocol):
    def __call__(self, object_type: str, object_id: str) -> dict[str, Any] | None:
        """The object as Stripe has it now, or None when Stripe has no such object."""


# Expanded where the table needs what the default response leaves out.
_EXPAND = {"charge": ["refunds"]}


class StripeRetriever:
    def __init__(self, client: stripe.StripeClient):
        self._client = client
        self.calls: Counter[str] = Counter()

    def _service(self, object_type: str):
        v1 = self._client.v1
        return {
            "customer": v1.customers, "subscription": v1.subscriptions, "invoice": v1.invoices,
            "payment_intent": v1.payment_intents, "charge": v1.charges, "refund": v1.refunds,
            "dispute": v1.disputes, "payment_method": v1.payment_methods, "setup_intent": v1.setup_intents,
            "checkout.session": v1.checkout.sessions, "product": v1.products, "price": v1.prices,
        }.get(object_type)

    def __call__(self, object_type: str, object_id: str) -> dict[str, Any] | None:
        service = self._service(object_type)
        if service is None:
            raise RetrieveError(f"no way to retrieve a {object_type!r} object")
        self.calls[object_type] += 1
        params = {"expand": _EXPAND[object_type]} if object_type in _EXPAND else None
        try:
            obj = service.retrieve(object_id, params=params) if params else service.retrieve(object_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise RetrieveError(f"retrieving {object_type} {object_id}: {exc.user_message}") from None
        except stripe.StripeError as exc:
            raise RetrieveError(f"retrieving {object_type} {object_id}: {type(exc).__name__}: "
                                f"{exc.user_message}") from None
        return obj.to_dict(for_json=True)
