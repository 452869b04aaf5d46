"""Stripe customers for organisations: create with the tenant metadata, update name/description/email."""

from __future__ import annotations

import stripe

from pipelines.billing import keys
from pipelines.billing.tenant import Tenant, tenant_from_env


def create_customer(client: stripe.StripeClient, *, organization_id: str, name: str, description: str = "",
                    email: str | None = None, tenant: Tenant | None = None) -> stripe.Customer:
    """One customer per organisation and request: a retry (same organisation, same fields) returns
    the customer the first attempt created."""
    meta = (tenant or tenant_from_env()).metadata(organization_id)
    params: dict = {"name": name, "description": description, "metadata": meta}
    if email:
        params["email"] = email
    return keys.create_once(
        client.v1.customers.create, params, "customer.create", organization_id,
        still_good=lambda c: not client.v1.customers.retrieve(c["id"]).to_dict().get("deleted"))


def update_customer(client: stripe.StripeClient, customer_id: str, *, name: str | None = None,
                    description: str | None = None, email: str | None = None,
                    scope: str | None = None) -> stripe.Customer:
    """Change the billing name, description or billing email; fields left None are untouched."""
    params = {k: v for k, v in (("name", name), ("description", description), ("email", email)) if v is not None}
    if not params:
        raise ValueError("update_customer: give at least one of name, description, email")
    return client.v1.customers.update(customer_id, params,
                                      keys.update_options("customer.update", customer_id, params=params, scope=scope))
