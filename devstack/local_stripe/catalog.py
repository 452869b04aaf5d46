"""Products and prices."""

from __future__ import annotations

from typing import Any

from devstack.local_stripe.app import Emulator
from devstack.local_stripe.errors import invalid
from devstack.local_stripe.wire import as_bool, as_int, as_metadata, as_str

INTERVALS = ("day", "week", "month", "year")


def create_product(em: Emulator, p: dict[str, Any]) -> dict[str, Any]:
    fields = {
        "name": as_str(p, "name", required=True), "active": as_bool(p, "active", True),
        "description": as_str(p, "description"), "metadata": as_metadata(p),
        "updated": em.now(), "images": [], "marketing_features": [],
    }
    if p.get("default_price_data"):
        raise invalid("default_price_data is not supported by the local Stripe; create the price", "default_price_data")
    oid = as_str(p, "id")
    if oid and em.store["product"].get(oid):
        raise invalid(f"Product already exists: {oid}", "id", code="resource_already_exists")
    return em.create("product", fields, oid=oid)


def update_product(em: Emulator, product: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {"metadata": as_metadata(p, product.get("metadata"))}
    for name in ("name", "description"):
        if name in p:
            changes[name] = as_str(p, name)
    if "active" in p:
        changes["active"] = as_bool(p, "active")
    if "default_price" in p:
        changes["default_price"] = em.get("price", p["default_price"], "default_price")["id"]
    if any(changes.get(k) != product.get(k) for k in changes):
        changes["updated"] = em.now()
    return em.update(product, changes)


def delete_product(em: Emulator, product: dict[str, Any]) -> dict[str, Any]:
    if any(pr["product"] == product["id"] for pr in em.store["price"].oldest_first(0)):
        raise invalid("This product cannot be deleted because it has one or more user-created prices.", "id")
    em.store["product"].remove(product["id"])
    em.deleted[product["id"]] = "product"
    em.emit("product.deleted", product)
    return {"id": product["id"], "object": "product", "deleted": True}


def create_price(em: Emulator, p: dict[str, Any]) -> dict[str, Any]:
    if p.get("product_data"):
        data = p["product_data"] if isinstance(p["product_data"], dict) else {}
        product = create_product(em, {"name": data.get("name"), "metadata": data.get("metadata")})
    else:
        product = em.get("product", as_str(p, "product", required=True), "product")
    currency = (as_str(p, "currency", required=True) or "").lower()
    unit_amount = as_int(p, "unit_amount", minimum=0)
    if unit_amount is None:
        raise invalid("Missing required param: unit_amount.", "unit_amount", code="parameter_missing")
    recurring = None
    if p.get("recurring"):
        r = p["recurring"]
        interval = as_str(r, "interval", required=True, choices=INTERVALS)
        recurring = {
            "interval": interval, "interval_count": as_int(r, "interval_count", 1, minimum=1),
            "usage_type": "licensed", "meter": None, "trial_period_days": None}
    lookup_key = as_str(p, "lookup_key")
    if lookup_key:
        for other in em.store["price"].oldest_first(0):
            if other.get("lookup_key") == lookup_key:
                if not as_bool(p, "transfer_lookup_key", False):
                    raise invalid(f"A price (`{other['id']}`) already uses that lookup key.", "lookup_key")
                em.update(other, {"lookup_key": None})
    fields = {
        "product": product["id"], "currency": currency, "unit_amount": unit_amount,
        "unit_amount_decimal": str(unit_amount), "active": as_bool(p, "active", True),
        "type": "recurring" if recurring else "one_time", "recurring": recurring,
        "billing_scheme": "per_unit", "lookup_key": lookup_key, "nickname": as_str(p, "nickname"),
        "metadata": as_metadata(p), "tax_behavior": "unspecified",
    }
    return em.create("price", fields)


def update_price(em: Emulator, price: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {"metadata": as_metadata(p, price.get("metadata"))}
    if "active" in p:
        changes["active"] = as_bool(p, "active")
    for name in ("nickname", "lookup_key"):
        if name in p:
            changes[name] = as_str(p, name) or None
    return em.update(price, changes)
