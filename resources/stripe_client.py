"""Stripe client: the official SDK's StripeClient with the API version pinned to the SDK's own,
a client-side rate limiter, retries that honour `Stripe-Should-Retry`, a call counter, and
idempotency keys derived from what a write does.

Everything HTTP goes through `GuardedHTTPClient`, a `stripe.HTTPClient` wrapping the SDK's
default one. The SDK calls `request()` once per attempt from its retry loop, so the limiter
and the counter see every attempt, and `_should_retry`/`_sleep_time_seconds` decide retries.

The secret key never appears in a repr, a log line or an exception: the resource's repr omits
it, and a response body that echoes the key back (an emulator, a proxy) is scrubbed before the
SDK builds its error from it.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping

import dagster as dg
import stripe
from pydantic import Field, PrivateAttr
from stripe._api_version import _ApiVersion

# The version the pinned SDK's typed resources describe; tests/billing/test_billing_stripe_client.py fails
# when the SDK is bumped without looking at what changed between the versions.
STRIPE_API_VERSION = "2026-10-28.endive"

LIVE_RATE_PER_SECOND = 100.0  # Stripe's documented live-mode limit
TEST_RATE_PER_SECOND = 25.0   # and its test-mode one

_ID_SEGMENT = re.compile(r"^[a-z]+_[A-Za-z0-9_]+$|^\d+$")


def idempotency_key(action: str, *parts: object) -> str:
    """A stable key for one logical write: the same action on the same inputs gives the same key,
    so a retried job or a replayed event never creates twice. `parts` are the identifiers that make
    the write unique (organisation id, price id, the Stripe event id that caused it, ...)."""
    digest = hashlib.sha256("\x1f".join([action, *map(str, parts)]).encode()).hexdigest()
    return f"mailroom-{action}-{digest[:40]}"


def is_test_key(api_key: str) -> bool:
    return api_key.startswith(("sk_test_", "rk_test_"))


def endpoint_kind(method: str, url: str) -> str:
    """'GET /v1/customers/{id}' for 'GET https://.../v1/customers/cus_123?expand[]=x': the path
    with object ids folded, for the call counter."""
    path = url.split("://", 1)[-1]
    path = path[path.find("/"):] if "/" in path else "/"
    path = path.split("?", 1)[0]
    segments = ["{id}" if _ID_SEGMENT.match(s) and s != "v1" else s for s in path.split("/")]
    return f"{method.upper()} {'/'.join(segments)}"


class TokenBucket:
    """`rate` tokens a second, bursts up to `capacity`; `acquire` blocks until a token is free.
    Thread-safe: one bucket is shared by every call the resource makes."""

    def __init__(self, rate: float, capacity: float | None = None, clock=time.monotonic, sleep=time.sleep):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()
        self.waited_seconds = 0.0

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1 - 1e-9:  # float residue must not spin on sub-nanosecond waits
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                wait = (1 - self._tokens) / self.rate
            self.waited_seconds += wait
            self._sleep(wait)


class GuardedHTTPClient(stripe.HTTPClient):
    """Rate limit, count and scrub every attempt; retry 409/429/5xx and network errors with
    exponential backoff and jitter; `Stripe-Should-Retry: true|false` overrides the status."""

    name = "mailroom-guarded"

    def __init__(self, inner: stripe.HTTPClient, limiter: TokenBucket, *, initial_delay: float = 0.5,
                 max_delay: float = 8.0):
        super().__init__()
        self._inner = inner
        self.limiter = limiter
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.calls: Counter[str] = Counter()      # attempts, by endpoint_kind
        self.retries: Counter[str] = Counter()    # by reason: "429", "500", "network", ...
        self._count_lock = threading.Lock()

    # -- one attempt --
    def request(self, method, url, headers, post_data=None, *, _usage=None):
        return self._attempt(self._inner.request, method, url, headers, post_data)

    def request_stream(self, method, url, headers, post_data=None, *, _usage=None):
        return self._attempt(self._inner.request_stream, method, url, headers, post_data)

    def _attempt(self, send, method, url, headers, post_data):
        self.limiter.acquire()
        with self._count_lock:
            self.calls[endpoint_kind(method, url)] += 1
        try:
            body, status, rheaders = send(method, url, headers, post_data)
        except stripe.APIConnectionError as exc:  # the message names the host, never the key
            raise stripe.APIConnectionError(_scrub(str(exc.user_message or exc), headers),
                                            should_retry=exc.should_retry) from None
        if status >= 400 and isinstance(body, (str, bytes)):
            body = _scrub(body, headers)
        return body, status, rheaders

    # -- retry policy --
    def _should_retry(self, response, api_connection_error, num_retries, max_network_retries):
        if num_retries >= (max_network_retries or 0):
            return False
        if response is None:
            retry = bool(api_connection_error is not None and api_connection_error.should_retry)
            reason = "network"
        else:
            _, status, rheaders = response
            told = _header(rheaders, "stripe-should-retry")
            if told == "false":
                return False
            retry = told == "true" or status in (409, 429) or status >= 500
            reason = str(status)
        if retry:
            with self._count_lock:
                self.retries[reason] += 1
        return retry

    def _sleep_time_seconds(self, num_retries: int) -> float:
        base = min(self.initial_delay * (2 ** (num_retries - 1)), self.max_delay)
        return self._add_jitter_time(base)  # uniform in [base/2, base]

    def close(self):
        self._inner.close()

    def total_calls(self) -> int:
        return sum(self.calls.values())


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    for k, v in headers.items():
        if k.lower() == name:
            return str(v).lower()
    return None


def _secret_from(headers: Mapping[str, str] | None) -> str | None:
    auth = (headers or {}).get("Authorization", "")
    return auth[7:] if auth.startswith("Bearer ") and len(auth) > 7 else None


def _scrub(text: str | bytes, headers: Mapping[str, str] | None) -> str | bytes:
    key = _secret_from(headers)
    if not key:
        return text
    if isinstance(text, bytes):
        return text.replace(key.encode(), b"[redacted]")
    return text.replace(key, "[redacted]")


class StripeResource(dg.ConfigurableResource):
    api_key: str = Field(description="Secret key; never logged.")
    webhook_secret: str = Field(description="whsec_...; never logged.")
    api_base: str = Field(default="https://api.stripe.com", description="Emulator address locally.")
    max_network_retries: int = 3
    rate_limit_per_second: int = Field(
        default=0, description="Client-side limit; 0 picks Stripe's: 100/s live, 25/s for test keys.")
    retry_initial_delay: float = 0.5
    retry_max_delay: float = 8.0
    # Ingestion of the stripe-events queue
    eventbridge_sources: str = Field(default="", description="Comma-separated EventBridge partner sources accepted.")
    webhook_tolerance_seconds: int = Field(default=300, description="Oldest webhook signature accepted; 0: no limit.")
    # Warehouse's tenant metadata: written on customers, and events naming another are skipped.
    billing_service: str = Field(default="", description="metadata.billing_service of this deployment.")
    domain: str = Field(default="", description="metadata.domain of this deployment.")
    _client: stripe.StripeClient | None = PrivateAttr(default=None)
    _http: GuardedHTTPClient | None = PrivateAttr(default=None)

    @property
    def rate_per_second(self) -> float:
        if self.rate_limit_per_second > 0:
            return self.rate_limit_per_second
        return TEST_RATE_PER_SECOND if is_test_key(self.api_key) else LIVE_RATE_PER_SECOND

    @property
    def http(self) -> GuardedHTTPClient:
        if self._http is None:
            self._http = GuardedHTTPClient(
                stripe.new_default_http_client(), TokenBucket(self.rate_per_second),
                initial_delay=self.retry_initial_delay, max_delay=self.retry_max_delay)
        return self._http

    def client(self) -> stripe.StripeClient:
        if self._client is None:
            self._client = stripe.StripeClient(
                self.api_key,
                stripe_version=STRIPE_API_VERSION,
                base_addresses={"api": self.api_base, "connect": self.api_base, "files": self.api_base},
                max_network_retries=self.max_network_retries,
                http_client=self.http,
            )
        return self._client

    def api_calls(self) -> dict[str, int]:
        """HTTP attempts so far, by 'METHOD /v1/path/{id}'."""
        return dict(self._http.calls) if self._http is not None else {}

    def construct_event(self, payload: bytes | str, signature_header: str, tolerance: int = 300) -> stripe.Event:
        return stripe.Webhook.construct_event(payload, signature_header, self.webhook_secret, tolerance)

    def __repr__(self) -> str:  # keep secrets out of logs and reprs
        mode = "test" if is_test_key(self.api_key) else "live"
        return f"StripeResource(api_base={self.api_base!r}, mode={mode!r})"

    __str__ = __repr__

    def __repr_args__(self):  # pydantic's own rendering (used by some loggers) gets the same
        return [("api_base", self.api_base)]
