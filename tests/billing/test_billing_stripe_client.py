"""The Stripe client: pinned version, idempotency keys, rate limiter, retries, secrets.

Retries are exercised against a real HTTP server on a local socket that plays back scripted
responses (the SDK talks to it unchanged through STRIPE_API_BASE)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import stripe

from resources.stripe_client import (
    STRIPE_API_VERSION,
    StripeResource,
    TokenBucket,
    endpoint_kind,
    idempotency_key,
)

KEY = "sk_test_51SuperSecretKeyValue0123456789"


def test_pinned_version_is_the_sdks():
    assert STRIPE_API_VERSION == stripe.api_version   # the SDK's own version


def test_idempotency_key_is_stable_and_specific():
    a = idempotency_key("create-customer", "org-1")
    assert a == idempotency_key("create-customer", "org-1")
    assert a != idempotency_key("create-customer", "org-2")
    assert a != idempotency_key("update-customer", "org-1")
    # parts are separated, not concatenated
    assert idempotency_key("x", "ab", "c") != idempotency_key("x", "a", "bc")
    assert len(a) <= 255 and a.startswith("mailroom-create-customer-")


def test_endpoint_kind_folds_ids():
    assert endpoint_kind("get", "http://127.0.0.1:9/v1/subscriptions/sub_1Abc?expand[]=items") == \
        "GET /v1/subscriptions/{id}"
    assert endpoint_kind("POST", "https://api.stripe.com/v1/customers") == "POST /v1/customers"


def test_token_bucket_holds_the_rate():
    now = [0.0]
    bucket = TokenBucket(25, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    for _ in range(125):
        bucket.acquire()
    # a burst of 25, then 100 more at 25/s
    assert now[0] == pytest.approx(4.0, abs=0.05)


def test_rate_defaults_by_mode_and_configurable():
    assert StripeResource(api_key=KEY, webhook_secret="whsec_x").rate_per_second == 25
    assert StripeResource(api_key="sk_live_abc", webhook_secret="whsec_x").rate_per_second == 100
    assert StripeResource(api_key=KEY, webhook_secret="whsec_x", rate_limit_per_second=7).rate_per_second == 7


class Scripted:
    """A local HTTP server answering each request with the next scripted (status, headers, body)."""

    def __init__(self, script):
        self.script = list(script)
        self.requests: list[tuple[str, str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                outer.requests.append((self.command, self.path, dict(self.headers)))
                status, headers, body = outer.script.pop(0) if outer.script else (200, {}, {"id": "x"})
                raw = json.dumps(body).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _resource(base: str, **kw) -> StripeResource:
    return StripeResource(api_key=KEY, webhook_secret="whsec_x", api_base=base, retry_initial_delay=0.01,
                          retry_max_delay=0.02, rate_limit_per_second=1000, **kw)


CUSTOMER = {"id": "cus_1", "object": "customer", "email": "a@example.org"}
ERR = {"error": {"type": "api_error", "message": "boom"}}


def test_retries_429_and_5xx_then_succeeds_with_one_idempotency_key():
    script = [(429, {}, {"error": {"type": "rate_limit_error", "message": "slow down"}}),
              (503, {}, ERR), (200, {}, CUSTOMER)]
    with Scripted(script) as srv:
        res = _resource(srv.base)
        cust = res.client().v1.customers.create(params={"email": "a@example.org"},
                                                options={"idempotency_key": idempotency_key("c", "org-1")})
    assert cust.id == "cus_1"
    assert len(srv.requests) == 3
    keys = {h.get("Idempotency-Key") for _, _, h in srv.requests}
    assert keys == {idempotency_key("c", "org-1")}
    assert {h.get("Stripe-Version") for _, _, h in srv.requests} == {STRIPE_API_VERSION}
    assert res.api_calls() == {"POST /v1/customers": 3}
    assert res.http.retries == {"429": 1, "503": 1}


def test_should_retry_header_forbids_and_forces():
    with Scripted([(500, {"Stripe-Should-Retry": "false"}, ERR)]) as srv:
        res = _resource(srv.base)
        with pytest.raises(stripe.APIError):
            res.client().v1.customers.retrieve("cus_1")
        assert len(srv.requests) == 1
    conflict = {"error": {"type": "invalid_request_error", "message": "lock timeout"}}
    with Scripted([(400, {"Stripe-Should-Retry": "true"}, conflict), (200, {}, CUSTOMER)]) as srv:
        res = _resource(srv.base)
        assert res.client().v1.customers.retrieve("cus_1").id == "cus_1"
        assert len(srv.requests) == 2


def test_client_errors_are_not_retried():
    with Scripted([(404, {}, {"error": {"type": "invalid_request_error", "code": "resource_missing",
                                        "message": "No such customer: 'cus_9'"}})]) as srv:
        res = _resource(srv.base)
        with pytest.raises(stripe.InvalidRequestError):
            res.client().v1.customers.retrieve("cus_9")
        assert len(srv.requests) == 1


def test_network_errors_are_retried_then_raised():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: connection refused
    res = _resource(f"http://127.0.0.1:{port}", max_network_retries=2)
    with pytest.raises(stripe.APIConnectionError) as exc:
        res.client().v1.customers.retrieve("cus_1")
    assert res.api_calls() == {"GET /v1/customers/{id}": 3}
    assert res.http.retries == {"network": 2}
    assert KEY not in str(exc.value)


def test_the_key_never_reaches_an_exception_or_a_repr():
    echo = {"error": {"type": "invalid_request_error", "message": f"Invalid API Key provided: {KEY}"}}
    with Scripted([(401, {}, echo)]) as srv:
        res = _resource(srv.base)
        with pytest.raises(stripe.AuthenticationError) as exc:
            res.client().v1.customers.retrieve("cus_1")
    err = exc.value
    for text in (str(err), repr(err), err.user_message or "", str(err.http_body), json.dumps(err.json_body)):
        assert KEY not in text
    assert "[redacted]" in str(err)
    for text in (repr(res), str(res)):
        assert KEY not in text and "whsec_x" not in text
