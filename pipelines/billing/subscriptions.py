"""Subscription Manager: an organisation's subscription from signup to cancellation.

Every write carries an idempotency key derived from the action (see keys.py): creates are keyed
by the organisation and parameters, so a retry never creates twice; updates (which set absolute
values, so repeating one is harmless) are keyed by the action and the caller's `scope` or the
call, so 5 seats -> 6 -> 5 -> 6 within a day is four changes, not a replay of the first.
"""

from __future__ import annotations

from dataclasses import dataclass

import stripe

from pipelines.billing import keys
from pipelines.billing.vocab import SubscriptionStatus
from pipelines.billing.tenant import Tenant, tenant_from_env




class SubscriptionError(ValueError):
    """An action that cannot apply to this subscription as it is (names the id and why)."""


def create_checkout_session(client: stripe.StripeClient, *, customer_id: str, price_id: str, organization_id: str,
                            success_url: str, cancel_url: str, quantity: int = 1,
                            tenant: Tenant | None = None, scope: str | None = None) -> stripe.checkout.Session:
    """A Checkout Session in subscription mode; send the payer to `session.url`. The subscription
    it creates carries the organisation and tenant metadata."""
    if quantity < 1:
        raise SubscriptionError(f"quantity must be at least 1, got {quantity}")
    meta = (tenant or tenant_from_env()).metadata(organization_id)
    params = {"mode": "subscription", "customer": customer_id,
              "line_items": [{"price": price_id, "quantity": quantity}],
              "success_url": success_url, "cancel_url": cancel_url,
              "metadata": meta, "subscription_data": {"metadata": meta}}
    return client.v1.checkout.sessions.create(
        params, keys.update_options("checkout.create", organization_id, params=params, scope=scope))


def default_payment_method(customer: stripe.Customer) -> str | None:
    settings = keys.plain(customer).get("invoice_settings") or {}
    pm = settings.get("default_payment_method")
    return pm if isinstance(pm, str) or pm is None else pm.get("id")


def create_subscription(client: stripe.StripeClient, *, customer_id: str, price_id: str, organization_id: str,
                        quantity: int = 1, tenant: Tenant | None = None,
                        scope: str | None = None) -> stripe.Subscription:
    """Subscribe directly, charging the customer's default payment method (no Checkout page)."""
    if quantity < 1:
        raise SubscriptionError(f"quantity must be at least 1, got {quantity}")
    customer = client.v1.customers.retrieve(customer_id)
    pm = default_payment_method(customer)
    if not pm:
        raise SubscriptionError(f"customer {customer_id} has no default payment method: add one first "
                                "(payments.create_setup_intent / set_default_payment_method) or use Checkout")
    params = {"customer": customer_id, "items": [{"price": price_id, "quantity": quantity}],
              "default_payment_method": pm,
              "metadata": (tenant or tenant_from_env()).metadata(organization_id)}
    return keys.create_once(
        client.v1.subscriptions.create, params, "subscription.create", organization_id, scope=scope,
        still_good=lambda s: client.v1.subscriptions.retrieve(s["id"])["status"] not in SubscriptionStatus.ENDED)


def create_portal_session(client: stripe.StripeClient, *, customer_id: str, return_url: str,
                          scope: str | None = None) -> stripe.billing_portal.Session:
    """A billing portal session (the customer manages cards and invoices at `session.url`)."""
    params = {"customer": customer_id, "return_url": return_url}
    return client.v1.billing_portal.sessions.create(
        params, keys.update_options("portal.create", customer_id, params=params, scope=scope))


def only_item(subscription) -> dict:
    items = keys.plain(subscription)["items"]["data"]
    if len(items) != 1:
        raise SubscriptionError(f"subscription {subscription['id']} has {len(items)} items; name the item to change")
    return items[0]


@dataclass(frozen=True)
class QuantityChange:
    subscription_id: str
    item_id: str
    before: int
    after: int
    called: bool


def set_item_quantity(client: stripe.StripeClient, *, subscription_id: str, item_id: str, before: int,
                      after: int, scope: str | None = None) -> QuantityChange:
    """Set an item's quantity when the caller already knows it (seat sync reads it from the tables).
    No call when it is already right."""
    if after < 1:
        raise SubscriptionError(f"subscription {subscription_id}: quantity must be at least 1, got {after}")
    if before == after:
        return QuantityChange(subscription_id, item_id, before, after, called=False)
    params = {"items": [{"id": item_id, "quantity": after}]}
    client.v1.subscriptions.update(subscription_id, params, keys.update_options(
        "subscription.quantity", subscription_id, item_id, f"{before}-{after}", params=params, scope=scope))
    return QuantityChange(subscription_id, item_id, before, after, called=True)


def change_quantity(client: stripe.StripeClient, subscription_id: str, quantity: int, *,
                    scope: str | None = None) -> QuantityChange:
    """Change the seat count of a one-item subscription (retrieves it first to know the current count)."""
    sub = keys.plain(client.v1.subscriptions.retrieve(subscription_id))
    if sub["status"] in SubscriptionStatus.ENDED:
        raise SubscriptionError(f"subscription {subscription_id} is {sub['status']}; its quantity cannot change")
    item = only_item(sub)
    return set_item_quantity(client, subscription_id=subscription_id, item_id=item["id"],
                             before=int(item.get("quantity") or 0), after=quantity, scope=scope)


def cancel(client: stripe.StripeClient, subscription_id: str, *, at_period_end: bool = False,
           scope: str | None = None) -> stripe.Subscription:
    """Cancel now (final) or at the end of the paid period (can be resumed until then)."""
    if at_period_end:
        params = {"cancel_at_period_end": True}
        return client.v1.subscriptions.update(subscription_id, params, keys.update_options(
            "subscription.cancel-at-period-end", subscription_id, params=params, scope=scope))
    return client.v1.subscriptions.cancel(subscription_id, None,
                                          keys.options("subscription.cancel", subscription_id, scope=scope))


def resume(client: stripe.StripeClient, subscription_id: str, *, scope: str | None = None) -> stripe.Subscription:
    """Undo a cancel-at-period-end before the period ends."""
    current = client.v1.subscriptions.retrieve(subscription_id)
    sub = keys.plain(current)
    if sub["status"] == SubscriptionStatus.CANCELED:
        raise SubscriptionError(f"subscription {subscription_id} is already canceled; start a new one instead")
    if not sub.get("cancel_at_period_end"):
        return current
    params = {"cancel_at_period_end": False}
    return client.v1.subscriptions.update(subscription_id, params, keys.update_options(
        "subscription.resume", subscription_id, params=params, scope=scope))


def pause(client: stripe.StripeClient, subscription_id: str, *, behavior: str = "void",
          scope: str | None = None) -> stripe.Subscription:
    """Pause collection (invoices are voided, or kept as drafts / marked uncollectible per `behavior`)."""
    if behavior not in ("void", "keep_as_draft", "mark_uncollectible"):
        raise SubscriptionError(f"pause behavior must be void, keep_as_draft or mark_uncollectible; got {behavior!r}")
    params = {"pause_collection": {"behavior": behavior}}
    return client.v1.subscriptions.update(subscription_id, params, keys.update_options(
        "subscription.pause", subscription_id, params=params, scope=scope))


def unpause(client: stripe.StripeClient, subscription_id: str, *, scope: str | None = None) -> stripe.Subscription:
    """Resume collection: clears pause_collection, or resumes a subscription whose status is `paused`
    (a trial that ended without a payment method)."""
    current = client.v1.subscriptions.retrieve(subscription_id)
    sub = keys.plain(current)
    if sub["status"] == "paused":
        return client.v1.subscriptions.resume(subscription_id, {"billing_cycle_anchor": "now"}, keys.update_options(
            "subscription.unpause-status", subscription_id, scope=scope))
    if not sub.get("pause_collection"):
        return current
    params = {"pause_collection": ""}
    return client.v1.subscriptions.update(subscription_id, params, keys.update_options(
        "subscription.unpause", subscription_id, params=params, scope=scope))
