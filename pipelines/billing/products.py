"""Products and prices with Warehouse's semantics: find by name, update the newest, archive duplicates.

Stripe search is eventually consistent (about a minute behind writes), so the create call is
also keyed by name and parameters: two runs racing to create the same product make one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import stripe

from pipelines.billing import keys


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _newest_first(objects: list) -> list:
    return sorted(objects, key=lambda o: (o["created"], o["id"]), reverse=True)


def create_or_update_product(client: stripe.StripeClient, *, name: str, description: str = "",
                             unit_label: str | None = None, tax_code: str | None = None,
                             metadata: dict[str, str] | None = None) -> stripe.Product:
    """The active product named `name`, created if missing, else its newest match updated."""
    params: dict = {"name": name, "description": description}
    if unit_label:
        params["unit_label"] = unit_label
    if tax_code:
        params["tax_code"] = tax_code
    if metadata:
        params["metadata"] = metadata
    found = _newest_first([keys.plain(p) for p in client.v1.products.search(
        {"query": f'active:"true" AND name:"{_quote(name)}"', "limit": 100}).auto_paging_iter()])
    if not found:
        return keys.create_once(client.v1.products.create, params, "product.create", name,
                                still_good=lambda p: client.v1.products.retrieve(p["id"])["active"])
    newest = found[0]
    update = {k: v for k, v in params.items() if k != "name" and newest.get(k) != v}
    if not update:
        return client.v1.products.retrieve(newest["id"])
    return client.v1.products.update(newest["id"], update,
                                     keys.options("product.update", newest["id"], params=update))


@dataclass
class PriceResult:
    price: stripe.Price
    created: bool
    archived: list[str] = field(default_factory=list)


def _matches(price: dict, unit_amount: int, currency: str, interval: str | None) -> bool:
    recurring = price.get("recurring") or {}
    return (price.get("unit_amount") == unit_amount and price.get("currency") == currency
            and (recurring.get("interval") if recurring else None) == interval)


def create_or_update_price(client: stripe.StripeClient, *, product_id: str, unit_amount: int, currency: str,
                           interval: str | None = "month", tax_behavior: str | None = None,
                           lookup_key: str | None = None) -> PriceResult:
    """The product's one active price with this amount, currency and interval.

    Prices are immutable in Stripe, so "update" means: keep the newest matching active price
    (or create it) and archive every other active price of the product, so exactly one is on sale.
    """
    currency = currency.lower()
    if unit_amount < 0:
        raise ValueError(f"unit_amount must be >= 0, got {unit_amount}")
    active = _newest_first([keys.plain(p) for p in client.v1.prices.search(
        {"query": f'active:"true" AND product:"{_quote(product_id)}"', "limit": 100}).auto_paging_iter()])
    match = next((p for p in active if _matches(p, unit_amount, currency, interval)), None)
    created = match is None
    if match is not None:
        keep = client.v1.prices.retrieve(match["id"])
    else:
        params: dict = {"product": product_id, "unit_amount": unit_amount, "currency": currency}
        if interval:
            params["recurring"] = {"interval": interval}
        if tax_behavior:
            params["tax_behavior"] = tax_behavior
        if lookup_key:
            params["lookup_key"] = lookup_key
            params["transfer_lookup_key"] = True
        keep = keys.create_once(client.v1.prices.create, params, "price.create", product_id,
                                still_good=lambda p: client.v1.prices.retrieve(p["id"])["active"])
    archived = []
    for price in active:
        if price["id"] != keep["id"]:
            client.v1.prices.update(price["id"], {"active": False}, keys.options("price.archive", price["id"]))
            archived.append(price["id"])
    return PriceResult(price=keep, created=created, archived=archived)
