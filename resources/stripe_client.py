"""Stripe client: the official SDK's StripeClient, API version pinned, base address configurable."""

from __future__ import annotations

import dagster as dg
import stripe
from pydantic import Field, PrivateAttr

STRIPE_API_VERSION = "2025-04-30.basil"


class StripeResource(dg.ConfigurableResource):
    api_key: str = Field(description="Secret key; never logged.")
    webhook_secret: str = Field(description="whsec_...; never logged.")
    api_base: str = Field(default="https://api.stripe.com", description="Emulator address locally.")
    max_network_retries: int = 2
    _client: stripe.StripeClient | None = PrivateAttr(default=None)

    def client(self) -> stripe.StripeClient:
        if self._client is None:
            self._client = stripe.StripeClient(
                self.api_key,
                stripe_version=STRIPE_API_VERSION,
                base_addresses={"api": self.api_base},
                max_network_retries=self.max_network_retries,
            )
        return self._client

    def construct_event(self, payload: bytes | str, signature_header: str) -> stripe.Event:
        return stripe.Webhook.construct_event(payload, signature_header, self.webhook_secret)

    def __repr__(self) -> str:  # keep secrets out of logs and reprs
        return f"StripeResource(api_base={self.api_base!r})"
