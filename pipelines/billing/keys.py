"""Idempotency keys derived from the action, so a retried call never creates or applies twice.

A key names what is being done and to what (`customer.create`, the organisation id), plus a
digest of the parameters: the same action with the same parameters gets the same key (Stripe
replays the first response), a different request gets a different key instead of Stripe's
400 "keys for idempotent requests can only be used with the same parameters".

Updates that can be undone and redone (quantity 5 -> 6 -> 5 -> 6, cancel at period end, resume,
cancel again) must not replay an earlier response within Stripe's 24-hour key lifetime, and a key
with the starting state in it would (5 -> 6 twice). They take the caller's `scope` (the Dagster
run id), else a fresh nonce per call (`update_options`): the SDK's own retries of that call reuse
it, and setting a field to a value is harmless to repeat.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from resources.stripe_client import idempotency_key

def _digest(params: Mapping[str, Any] | None) -> str:
    if not params:
        return "-"
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def action_key(action: str, *parts: object, params: Mapping[str, Any] | None = None,
               scope: str | None = None) -> str:
    """The client's `idempotency_key` over the action, its ids, the caller's scope and a digest
    of the parameters."""
    return idempotency_key(action, *parts, *([scope] if scope else []), _digest(params))


def plain(obj: Any) -> Any:
    """A Stripe SDK object (which is not a dict in SDK v16) as plain dicts and lists."""
    return obj.to_dict() if hasattr(obj, "to_dict") else obj


def replayed(obj: Any) -> bool:
    """Stripe answered from its idempotency cache (`Idempotent-Replayed: true`): the object is as
    it was when first created, and may have ended since."""
    headers = getattr(getattr(obj, "last_response", None), "headers", None) or {}
    return any(k.lower() == "idempotent-replayed" and str(v).lower() == "true" for k, v in headers.items())


def create_once(create: Callable[[dict, dict], Any], params: dict, action: str, *parts: object,
                still_good: Callable[[Any], bool], scope: str | None = None) -> Any:
    """`create(params, options)` keyed by the action: a retry returns the object the first attempt
    made. If Stripe replays an object that has since ended (a customer deleted, a subscription
    canceled, a price archived: the same action legitimately asked again within the key's 24
    hours), create anew under a key that names the ended object, so that request is itself
    retry-safe."""
    obj = create(params, options(action, *parts, params=params, scope=scope))
    for _ in range(3):
        if not replayed(obj) or still_good(obj):
            return obj
        obj = create(params, options(action, *parts, params=params, scope=f"{scope or ''}after-{obj['id']}"))
    return obj


def options(action: str, *parts: object, params: Mapping[str, Any] | None = None,
            scope: str | None = None) -> dict[str, str]:
    """RequestOptions for the SDK: {"idempotency_key": ...}."""
    return {"idempotency_key": action_key(action, *parts, params=params, scope=scope)}


def update_options(action: str, *parts: object, params: Mapping[str, Any] | None = None,
                   scope: str | None = None) -> dict[str, str]:
    """RequestOptions for a reversible update: scoped by the caller, or unique to this call."""
    return options(action, *parts, params=params, scope=scope or f"call-{uuid.uuid4().hex[:12]}")
