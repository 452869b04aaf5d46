"""HTTP: Stripe's /v1 API and the /_control/ endpoints on a ThreadingHTTPServer."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import orjson

from devstack.local_stripe import api, control
from devstack.local_stripe import params as accepted_params
from devstack.local_stripe.app import Emulator
from devstack.local_stripe.errors import StripeError, invalid, unauthorized
from devstack.local_stripe.wire import parse_form

log = logging.getLogger("local_stripe")


class Handler(BaseHTTPRequestHandler):
    server: "StripeServer"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - one line per request is noise
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:
        em = self.server.emulator
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request_id = "req_" + secrets.token_hex(7)
        version = self.headers.get("Stripe-Version") or em.config.api_version
        headers = {"Request-Id": request_id, "Stripe-Version": version}
        try:
            if parts.path.startswith("/_control/"):
                status, body = control.dispatch(em, method, parts.path, parts.query, raw)
                self._send(status, orjson.dumps(body), headers)
                return
            self._api(em, method, parts.path, parts.query, raw, request_id, version, headers)
        except StripeError as exc:
            if exc.should_retry is not None:
                headers["Stripe-Should-Retry"] = "true" if exc.should_retry else "false"
            self._send(exc.status, orjson.dumps(exc.body()), headers)
        except Exception as exc:  # a bug in the emulator: answer like Stripe's api_error and log it
            log.exception("%s %s failed", method, parts.path)
            body = StripeError(500, "api_error", f"local Stripe internal error: {type(exc).__name__}: {exc}").body()
            self._send(500, orjson.dumps(body), headers)

    def _api(self, em: Emulator, method: str, path: str, query: str, raw: bytes, request_id: str, version: str,
             headers: dict[str, str]) -> None:
        api_key = _api_key(self.headers.get("Authorization"))
        params = parse_form(query)
        if method == "POST":
            params.update(parse_form(raw.decode("utf-8", errors="replace")))
        fault = em.faults.api_fault()
        if fault is not None:
            raise fault
        found = api.find_route(method, path)
        if found is None:
            raise api.error_for_unknown(method, path)
        handler, args, pattern = found
        accepted_params.check(method, pattern, params)
        key = self.headers.get("Idempotency-Key") if method in ("POST", "DELETE") else None
        if key:
            with em.lock:
                saved = em.idempotency.begin(api_key, key, em.idempotency.fingerprint(method, path, raw))
            if saved is not None:
                self._send(saved.status, saved.body, {**headers, "Idempotent-Replayed": "true",
                                                      "Original-Request": saved.request_id})
                return
        status, body = 200, b""
        try:
            if em.faults.latency_seconds:
                time.sleep(em.faults.latency_seconds)
            with em.lock:
                em.request = {"id": request_id, "idempotency_key": key}
                em.api_version = version
                try:
                    result = handler(em, args, params)
                    expand = params.get("expand") or []
                    if not isinstance(expand, list):
                        raise invalid("Invalid array: expand", "expand")
                    rendered = _render(em, result, expand)
                finally:
                    em.request = {"id": None, "idempotency_key": None}
                    em.api_version = em.config.api_version
            body = orjson.dumps(rendered)
        except StripeError as exc:
            status, body = exc.status, orjson.dumps(exc.body())
            if exc.should_retry is not None:
                headers["Stripe-Should-Retry"] = "true" if exc.should_retry else "false"
            if key and exc.status in (400, 404) and exc.type == "invalid_request_error":
                with em.lock:  # Stripe saves no result for a request that failed validation
                    em.idempotency.forget(api_key, key)
                key = None
        except BaseException:
            if key:
                with em.lock:
                    em.idempotency.forget(api_key, key)
            raise
        if key:
            with em.lock:
                em.idempotency.finish(api_key, key, status, body, request_id)
        self._send(status, body, headers)


def _api_key(authorization: str | None) -> str:
    if not authorization:
        raise unauthorized("You did not provide an API key. You need to provide your API key in the "
                           "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "basic":
        import base64

        value = base64.b64decode(value).decode(errors="replace").split(":", 1)[0]
    if not value.startswith(("sk_test_", "rk_test_")):
        shown = value[:8] + "*" * max(0, len(value) - 12) + value[-4:] if len(value) > 12 else "***"
        raise unauthorized(f"Invalid API Key provided: {shown}. The local Stripe accepts test keys (sk_test_...).")
    return value


def _render(em: Emulator, result: Any, expand: list[str]) -> Any:
    if isinstance(result, api.Page):
        inner = [p.removeprefix("data.") for p in expand if p.startswith("data.")]
        return result.body([em.expand(em.render(o), inner) for o in result.data])
    if isinstance(result, dict) and result.get("deleted") is True:
        return result
    return em.expand(em.render(result), expand)


class StripeServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, emulator: Emulator, host: str = "127.0.0.1", port: int = 12111) -> None:
        super().__init__((host, port), Handler)
        self.emulator = emulator
        emulator.config.public_base = f"http://{host}:{self.port}"

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="local-stripe-http", daemon=True)
        thread.start()
        return thread
