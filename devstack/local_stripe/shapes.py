"""Every field the SDK's typed resources declare, with a neutral value of the declared type.

The store keeps only the fields an object has set, nested objects included (a few dozen of the
hundreds declared once nested classes count), which is what lets it hold 100,000 subscriptions.
`render` completes an object when it leaves the emulator: every declared field, None for
optional ones, [] for lists, {} for hashes, nested objects and embedded resources (an item's
price, an event's data.object) completed the same way.
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
import typing
from pathlib import Path
from typing import Any

import stripe
from stripe._list_object import ListObject
from stripe._search_result_object import SearchResultObject
from stripe._stripe_object import StripeObject

# object name -> SDK class: the types this project uses, and what they embed
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
    "credit_note": stripe.CreditNote,
    "line_item": stripe.InvoiceLineItem,
    "invoice_payment": stripe.InvoicePayment,
    "item": stripe.LineItem,
    "payment_intent": stripe.PaymentIntent,
    "charge": stripe.Charge,
    "refund": stripe.Refund,
    "dispute": stripe.Dispute,
    "event": stripe.Event,
    "test_helpers.test_clock": stripe.test_helpers.TestClock,
}


class SdkNamespace(dict):
    """Where the SDK's forward references resolve: the class's module, then the (lazily
    loaded) stripe package, whose resources the modules import only for type checking."""

    def __init__(self, module_name: str) -> None:
        super().__init__(vars(sys.modules[module_name]))

    def __missing__(self, key: str) -> Any:
        alias = _type_checking_aliases(self["__name__"]).get(key)
        if alias is not None:
            return getattr(importlib.import_module(alias[0]), alias[1])
        for package in (stripe, getattr(stripe, "checkout"), getattr(stripe, "billing_portal"),
                        getattr(stripe, "test_helpers")):
            try:
                return getattr(package, key)
            except AttributeError:
                continue
        raise KeyError(key)


@functools.cache
def _type_checking_aliases(module_name: str) -> dict[str, tuple[str, str]]:
    """Names the module imports from stripe only for type checking (`from stripe._card import
    Card as CardResource`, parenthesised lists too): name -> (module, attribute)."""
    source = Path(sys.modules[module_name].__file__ or "").read_text()
    found: dict[str, tuple[str, str]] = {}
    for mod, names in re.findall(r"from (stripe[\w.]*) import (\([^)]*\)|[^\n]+)", source):
        for item in names.strip("()").split(","):
            parts = item.split()
            if len(parts) == 1:
                found[parts[0]] = (mod, parts[0])
            elif len(parts) == 3 and parts[1] == "as":
                found[parts[2]] = (mod, parts[0])
    return found


def hints(cls: type) -> dict[str, Any]:
    """The declared fields of an SDK class (nested classes included), without ClassVars."""
    try:
        found = typing.get_type_hints(cls, None, SdkNamespace(cls.__module__))
    except Exception:  # a forward reference the SDK namespace cannot resolve: fall back to raw
        found = dict(getattr(cls, "__annotations__", {}))
    return {k: v for k, v in found.items()
            if typing.get_origin(v) is not typing.ClassVar and k != "OBJECT_NAME" and not k.startswith("_")}


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
def defaults(cls: type) -> dict[str, Any]:
    """cls's declared fields with neutral values. Shared: copy before changing."""
    return {k: _default(v, 1) for k, v in hints(cls).items()}


def _nested_class(tp: Any) -> type | None:
    """The StripeObject class an annotation (possibly Optional[...]) describes, if any."""
    for arm in [tp, *typing.get_args(tp)]:
        cls = typing.get_origin(arm) or arm
        if isinstance(cls, type) and issubclass(cls, StripeObject) \
                and not issubclass(cls, (ListObject, SearchResultObject)) and cls.__name__ != "UntypedStripeObject":
            return cls
    return None


@functools.cache
def _field_classes(cls: type) -> dict[str, tuple[type | None, type | None]]:
    """field -> (nested object class, element class of a declared List[...])."""
    out = {}
    for name, tp in hints(cls).items():
        element = None
        for arm in [tp, *typing.get_args(tp)]:
            if typing.get_origin(arm) in (list, typing.List) and typing.get_args(arm):
                element = _nested_class(typing.get_args(arm)[0])
        out[name] = (_nested_class(tp), element)
    return out


def complete(cls: type | None, values: dict[str, Any]) -> dict[str, Any]:
    """values with every field cls declares, nested objects and embedded resources completed."""
    kind = values.get("object")
    if isinstance(kind, str) and kind in RESOURCES:
        cls = RESOURCES[kind]
    if cls is None:
        return values
    fields = _field_classes(cls)
    out = dict(defaults(cls))
    for key, value in values.items():
        nested, element = fields.get(key, (None, None))
        if isinstance(value, dict):
            out[key] = _complete_value(nested, value)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            out[key] = [_complete_value(element, v) for v in value]
        else:
            out[key] = value
    if "object" in out and isinstance(kind, str):
        out["object"] = kind
    return out


def _complete_value(cls: type | None, value: dict[str, Any]) -> dict[str, Any]:
    kind = value.get("object")
    if kind in ("list", "search_result") and isinstance(value.get("data"), list):
        return {**value, "data": [complete(None, v) if isinstance(v, dict) else v for v in value["data"]]}
    if isinstance(kind, str) and kind in RESOURCES:
        return complete(RESOURCES[kind], value)
    return complete(cls, value) if cls is not None else value


@functools.cache
def skeleton(object_name: str) -> dict[str, Any]:
    out = dict(defaults(RESOURCES[object_name]))
    out.update(object=object_name, livemode=False)
    return out


class Sparse(dict):
    """A stored object: only the fields that differ from their declared default. Reading a
    declared field that is not stored gives its default (shared: never mutate it in place)."""

    __slots__ = ()

    def __missing__(self, key: str) -> Any:
        name = dict.get(self, "object")
        defaults = skeleton(name) if name in RESOURCES else {}
        if key in defaults:
            return defaults[key]
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


ALWAYS_KEPT = frozenset({"id", "object", "created", "livemode"})


_MISSING = object()


def compact(object_name: str, fields: dict[str, Any]) -> Sparse:
    """fields without the top-level ones equal to their declared default (render puts them
    back; reading them from the Sparse gives the default)."""
    base = skeleton(object_name)
    return Sparse({k: v for k, v in fields.items() if k in ALWAYS_KEPT or base.get(k, _MISSING) != v})


def render(object_name: str, sparse: dict[str, Any]) -> dict[str, Any]:
    """A fresh, complete top-level dict. Nested defaults are shared: never mutate them in place."""
    return complete(RESOURCES[object_name], sparse)


@functools.cache
def _path_class(object_name: str, path: tuple[str, ...]) -> type:
    cls: type = RESOURCES[object_name]
    for part in path:
        found = _nested_class(hints(cls)[part])
        if found is None:
            raise KeyError(f"{object_name}.{'.'.join(path)} is not a nested object")
        cls = found
    return cls


def fill(object_name: str, path: str, values: dict[str, Any]) -> dict[str, Any]:
    """A nested object given in full at once (rarely needed: render completes nested objects)."""
    return complete(_path_class(object_name, tuple(path.split("."))), values)
