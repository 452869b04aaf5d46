"""Which top-level parameters each route accepts: the keys of the SDK's request TypedDicts
(stripe.params), so a parameter Stripe would refuse is refused here too (400, "Received
unknown parameter"), and one Stripe accepts is never refused for being unknown. The emulator
ignores accepted parameters it does not model (e.g. proration_behavior: no prorations)."""

from __future__ import annotations

import functools
import importlib
from typing import Any

from devstack.local_stripe.errors import invalid

# (method, route pattern) -> "module:TypedDict" under stripe.params
ROUTE_PARAMS: dict[tuple[str, str], str] = {
    ("POST", "/v1/customers"): "CustomerCreateParams",
    ("GET", "/v1/customers/search"): "CustomerSearchParams",
    ("GET", "/v1/customers"): "CustomerListParams",
    ("GET", "/v1/customers/{id}"): "CustomerRetrieveParams",
    ("POST", "/v1/customers/{id}"): "CustomerUpdateParams",
    ("DELETE", "/v1/customers/{id}"): "CustomerDeleteParams",
    ("GET", "/v1/customers/{id}/payment_methods"): "CustomerPaymentMethodListParams",
    ("GET", "/v1/customers/{id}/payment_methods/{pm}"): "CustomerPaymentMethodRetrieveParams",
    ("POST", "/v1/products"): "ProductCreateParams",
    ("GET", "/v1/products/search"): "ProductSearchParams",
    ("GET", "/v1/products"): "ProductListParams",
    ("GET", "/v1/products/{id}"): "ProductRetrieveParams",
    ("POST", "/v1/products/{id}"): "ProductUpdateParams",
    ("DELETE", "/v1/products/{id}"): "ProductDeleteParams",
    ("POST", "/v1/prices"): "PriceCreateParams",
    ("GET", "/v1/prices/search"): "PriceSearchParams",
    ("GET", "/v1/prices"): "PriceListParams",
    ("GET", "/v1/prices/{id}"): "PriceRetrieveParams",
    ("POST", "/v1/prices/{id}"): "PriceUpdateParams",
    ("POST", "/v1/subscriptions"): "SubscriptionCreateParams",
    ("GET", "/v1/subscriptions/search"): "SubscriptionSearchParams",
    ("GET", "/v1/subscriptions"): "SubscriptionListParams",
    ("GET", "/v1/subscriptions/{id}"): "SubscriptionRetrieveParams",
    ("POST", "/v1/subscriptions/{id}"): "SubscriptionUpdateParams",
    ("DELETE", "/v1/subscriptions/{id}"): "SubscriptionCancelParams",
    ("POST", "/v1/subscriptions/{id}/pause"): "SubscriptionPauseParams",
    ("POST", "/v1/subscriptions/{id}/resume"): "SubscriptionResumeParams",
    ("GET", "/v1/subscription_items"): "SubscriptionItemListParams",
    ("GET", "/v1/subscription_items/{id}"): "SubscriptionItemRetrieveParams",
    ("POST", "/v1/subscription_items/{id}"): "SubscriptionItemUpdateParams",
    ("POST", "/v1/invoices"): "InvoiceCreateParams",
    ("GET", "/v1/invoices"): "InvoiceListParams",
    ("GET", "/v1/invoices/{id}"): "InvoiceRetrieveParams",
    ("POST", "/v1/invoices/{id}"): "InvoiceUpdateParams",
    ("POST", "/v1/invoices/{id}/finalize"): "InvoiceFinalizeInvoiceParams",
    ("POST", "/v1/invoices/{id}/pay"): "InvoicePayParams",
    ("POST", "/v1/invoices/{id}/void"): "InvoiceVoidInvoiceParams",
    ("POST", "/v1/invoices/{id}/mark_uncollectible"): "InvoiceMarkUncollectibleParams",
    ("GET", "/v1/invoices/{id}/lines"): "InvoiceListLinesParams",
    ("POST", "/v1/payment_methods"): "PaymentMethodCreateParams",
    ("GET", "/v1/payment_methods"): "PaymentMethodListParams",
    ("GET", "/v1/payment_methods/{id}"): "PaymentMethodRetrieveParams",
    ("POST", "/v1/payment_methods/{id}"): "PaymentMethodUpdateParams",
    ("POST", "/v1/payment_methods/{id}/attach"): "PaymentMethodAttachParams",
    ("POST", "/v1/payment_methods/{id}/detach"): "PaymentMethodDetachParams",
    ("POST", "/v1/setup_intents"): "SetupIntentCreateParams",
    ("GET", "/v1/setup_intents"): "SetupIntentListParams",
    ("GET", "/v1/setup_intents/{id}"): "SetupIntentRetrieveParams",
    ("POST", "/v1/setup_intents/{id}/confirm"): "SetupIntentConfirmParams",
    ("POST", "/v1/setup_intents/{id}/cancel"): "SetupIntentCancelParams",
    ("POST", "/v1/billing_portal/sessions"): "billing_portal:SessionCreateParams",
    ("POST", "/v1/payment_intents"): "PaymentIntentCreateParams",
    ("GET", "/v1/payment_intents"): "PaymentIntentListParams",
    ("GET", "/v1/payment_intents/{id}"): "PaymentIntentRetrieveParams",
    ("POST", "/v1/payment_intents/{id}/confirm"): "PaymentIntentConfirmParams",
    ("POST", "/v1/payment_intents/{id}/cancel"): "PaymentIntentCancelParams",
    ("GET", "/v1/charges"): "ChargeListParams",
    ("GET", "/v1/charges/{id}"): "ChargeRetrieveParams",
    ("POST", "/v1/refunds"): "RefundCreateParams",
    ("GET", "/v1/refunds"): "RefundListParams",
    ("GET", "/v1/refunds/{id}"): "RefundRetrieveParams",
    ("GET", "/v1/disputes"): "DisputeListParams",
    ("GET", "/v1/disputes/{id}"): "DisputeRetrieveParams",
    ("POST", "/v1/disputes/{id}/close"): "DisputeCloseParams",
    ("POST", "/v1/checkout/sessions"): "checkout:SessionCreateParams",
    ("GET", "/v1/checkout/sessions"): "checkout:SessionListParams",
    ("GET", "/v1/checkout/sessions/{id}"): "checkout:SessionRetrieveParams",
    ("POST", "/v1/checkout/sessions/{id}/expire"): "checkout:SessionExpireParams",
    ("GET", "/v1/checkout/sessions/{id}/line_items"): "checkout:SessionLineItemListParams",
    ("GET", "/v1/events"): "EventListParams",
    ("GET", "/v1/events/{id}"): "EventRetrieveParams",
    ("POST", "/v1/test_helpers/test_clocks"): "test_helpers:TestClockCreateParams",
    ("GET", "/v1/test_helpers/test_clocks"): "test_helpers:TestClockListParams",
    ("GET", "/v1/test_helpers/test_clocks/{id}"): "test_helpers:TestClockRetrieveParams",
    ("DELETE", "/v1/test_helpers/test_clocks/{id}"): "test_helpers:TestClockDeleteParams",
    ("POST", "/v1/test_helpers/test_clocks/{id}/advance"): "test_helpers:TestClockAdvanceParams",
}

# RequestOptions keys: how the SDK is called, never sent as parameters
_OPTIONS = {"api_key", "stripe_version", "stripe_account", "stripe_context", "max_network_retries",
            "idempotency_key", "content_type", "headers"}


@functools.cache
def accepted(method: str, pattern: str) -> frozenset[str] | None:
    name = ROUTE_PARAMS.get((method, pattern))
    if name is None:
        return None
    package, _, cls_name = name.rpartition(":")
    module = importlib.import_module("stripe.params" + (f".{package}" if package else ""))
    cls = getattr(module, cls_name)
    return frozenset((cls.__required_keys__ | cls.__optional_keys__) - _OPTIONS)


def check(method: str, pattern: str, params: dict[str, Any]) -> None:
    allowed = accepted(method, pattern)
    if allowed is None:
        return
    for key in params:
        if key not in allowed:
            raise invalid(f"Received unknown parameter: {key}", key, code="parameter_unknown")
