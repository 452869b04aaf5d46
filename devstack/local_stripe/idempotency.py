"""Idempotency-Key: the same key with the same request replays the first response; another
request under that key is refused (400 idempotency_error); one still running answers 409."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from devstack.local_stripe.errors import StripeError

MAX_KEYS = 200_000


@dataclass
class Saved:
    fingerprint: str
    status: int = 0
    body: bytes = b""
    request_id: str = ""
    done: bool = False


class IdempotencyCache:
    def __init__(self) -> None:
        self.entries: OrderedDict[tuple[str, str], Saved] = OrderedDict()

    @staticmethod
    def fingerprint(method: str, path: str, body: bytes) -> str:
        return hashlib.sha256(b"\n".join([method.encode(), path.encode(), body])).hexdigest()

    def begin(self, api_key: str, key: str, fingerprint: str) -> Saved | None:
        """The saved response to replay, or None after reserving the key for this request."""
        saved = self.entries.get((api_key, key))
        if saved is None:
            self.entries[(api_key, key)] = Saved(fingerprint)
            while len(self.entries) > MAX_KEYS:
                self.entries.popitem(last=False)
            return None
        if saved.fingerprint != fingerprint:
            raise StripeError(400, "idempotency_error",
                              "Keys for idempotent requests can only be used with the same parameters they "
                              f"were first used with. Try using a key other than '{key}' if you meant to "
                              "execute a different request.")
        if not saved.done:
            raise StripeError(409, "idempotency_error", f"There is currently another in-progress request "
                              f"using this Idempotent Key ('{key}'). Please try again later.",
                              code="idempotency_key_in_use", should_retry=True)
        return saved

    def finish(self, api_key: str, key: str, status: int, body: bytes, request_id: str = "") -> None:
        saved = self.entries.get((api_key, key))
        if saved is not None:
            saved.status, saved.body, saved.request_id, saved.done = status, body, request_id, True

    def forget(self, api_key: str, key: str) -> None:
        self.entries.pop((api_key, key), None)
