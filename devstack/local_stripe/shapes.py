"""Every field the SDK's typed resource declares, with a neutral value of the declared type.

The store keeps only the fields an object has actually set (a few dozen of up to ~90), which is
what lets it hold 100,000 subscriptions; `render` lays them over this skeleton when an object
leaves the emulator, so each response carries every declared field (None for optional ones,
[] for lists, {} for hashes, nested objects filled the same way).
"""

from __future__ import annotations

import functools
import typing
from typing import Any

import stripe
from stripe._list_object import ListObject
from stripe._stripe_object import StripeObject

# object name -> SDK class; the types this project uses
RESOURCES: dict[str, type[StripeObject]] = {
    "customer": stripe.Customer,
    "product": stripe.Product,
    "price": stripe.Price,
    "subscription": stripe.Subscription,
    "subscription_item": stripe.SubscriptionItem,
    "checkout.session": stripe.checkout.Session,
    "billing_portal.session": stripe.billing_portal.Session,
    "payment_method": stripe.PaymentMethod,
    "setup_intent": stripe.SetupIntent,
    "invoice": stripe.Invoice,
    "line_item": stripe.InvoiceLineItem,
    "payment_intent": stripe.PaymentIntent,
    "charge": stripe.Charge,
    "refund": stripe.Refund,
    "dispute": stripe.Dispute,
    "event": stripe.Event,
    "test_helpers.test_clock": stripe.test_helpers.TestClock,
}


def hints(cls: type) -> dict[str, Any]:
    """The declared fields of an SDK class (nested classes included), without ClassVars."""
    try:
        found = typing.get_type_hints(cls, vars(stripe))
    except Exception:  # a forward reference the SDK namespace cannot resolve: fall back to raw
        found = dict(getattr(cls, "__annotations__", {}))
    return {k: v for k, v in found.items() if typing.get_origin(v) is not typing.ClassVar and k != "OBJECT_NAME"}


def _default(tp: Any, depth: int = 0) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        if type(None) in args:
            return None
        literals = [a for a in args if typing.get_origin(a) is typing.Literal]
        if literals:
            return typing.get_args(literals[0])[0]
        return _default(args[0], depth)  # Union[str, Resource]: an id
    if origin is typing.Literal:
        return args[0]
    if origin in (list, typing.List):
        return []
    if origin in (dict, typing.Dict):
        return {}
    if tp is str:
        return ""
    if tp is bool:
        return False
    if tp is int:
        return 0
    if tp is float:
        return 0.0
    cls = origin or tp
    if isinstance(cls, type) and issubclass(cls, ListObject):
        return {"object": "list", "data": [], "has_more": False, "url": ""}
    if isinstance(cls, type) and issubclass(cls, StripeObject):
        if cls.__name__ == "UntypedStripeObject" or depth > 6:
            return {}
        return {k: _default(v, depth + 1) for k, v in hints(cls).items()}
    return None


@functools.cache
def skeleton(object_name: str) -> dict[str, Any]:
    cls = RESOURCES[object_name]
    base = {k: _default(v) for k, v in hints(cls).items()}
    base["object"] = object_name
    base["livemode"] = False
    return base


def render(object_name: str, sparse: dict[str, Any]) -> dict[str, Any]:
    """A fresh top-level dict. Nested skeleton values are shared: never mutate them in place."""
    out = dict(skeleton(object_name))
    out.update(sparse)
    return out


@functools.cache
def _nested_default(object_name: str, path: tuple[str, ...]) -> Any:
    tp: Any = RESOURCES[object_name]
    for part in path:
        field_type = hints(tp)[part]
        args = [a for a in typing.get_args(field_type) if a is not type(None)] or [field_type]
        tp = next((a for a in args if isinstance(a, type) and issubclass(a, StripeObject)), args[0])
    return {k: _default(v, 1) for k, v in hints(tp).items()}


def fill(object_name: str, path: str, values: dict[str, Any]) -> dict[str, Any]:
    """A nested object (e.g. fill("price", "recurring", {...})) with every declared field."""
    out = dict(_nested_default(object_name, tuple(path.split("."))))
    out.update(values)
    return out
