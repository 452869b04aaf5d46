"""The local Stripe through the official SDK over HTTP: wire format, state, lifecycle, time,
events, faults (an in-process server); and its deliveries into the stack's real moto queue."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import stripe

from devstack.local_stripe.app import Emulator
from devstack.local_stripe.server import StripeServer
from devstack.state import REPO_ROOT

pytestmark = pytest.mark.integration  # every test here talks to a local Stripe server

API_VERSION = stripe.api_version   # the SDK's own version
DAY = 86400


class Local:
    """An in-process local Stripe on a free port, reached over HTTP only."""

    def __init__(self) -> None:
        self.server = StripeServer(Emulator(), port=0)
        self.server.start_background()
        self.base = f"http://127.0.0.1:{self.server.port}"

    def control(self, path: str, method: str = "POST", **body: Any) -> Any:
        req = urllib.request.Request(f"{self.base}/_control/{path}", method=method,
                                     data=json.dumps(body).encode() if method == "POST" else None)
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())

    def client(self, **options: Any) -> stripe.StripeClient:
        options.setdefault("stripe_version", API_VERSION)
        options.setdefault("max_network_retries", 0)
        return stripe.StripeClient("sk_test_wire", base_addresses={"api": self.base}, **options)

    def raw(self, method: str, path: str, data: str | None = None, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], Any]:
        req = urllib.request.Request(f"{self.base}{path}", method=method, data=data.encode() if data else None,
                                     headers={"Authorization": "Bearer sk_test_wire", **(headers or {})})
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, dict(r.headers), json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), json.loads(exc.read())

    def events(self, client: stripe.StripeClient, **params: Any) -> list[Any]:
        return list(client.v1.events.list(params={"limit": 100, **params}).auto_paging_iter())  # newest first


@pytest.fixture(scope="module")
def local():
    emulator = Local()
    yield emulator
    emulator.server.shutdown()
    emulator.server.emulator.close()


@pytest.fixture
def client(local):
    local.control("reset")
    local.control("faults")
    local.control("settings", dunning_final_action="cancel", retry_days=[3, 8, 15])
    return local.client()


def plan(client, amount=500, interval="month", **params):
    product = client.v1.products.create(params={"name": "Organization plan", "metadata": {"tier": "org"}})
    return client.v1.prices.create(params={"product": product.id, "unit_amount": amount, "currency": "usd",
                                           "recurring": {"interval": interval}, **params})


def customer_with_card(client, card="pm_card_visa", **params):
    customer = client.v1.customers.create(params={"email": "owner@example.org", **params})
    pm = client.v1.payment_methods.attach(card, params={"customer": customer.id})
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": pm.id}})
    return customer, pm


def status_changes(local, client, sub_id):
    """The subscription's statuses in event order, from its created/updated/deleted events."""
    events = reversed(local.events(client, types=["customer.subscription.created", "customer.subscription.updated",
                                                  "customer.subscription.deleted", "customer.subscription.paused",
                                                  "customer.subscription.resumed"]))
    out = []
    for e in events:
        obj = e.data.object
        if obj.id == sub_id and (not out or out[-1] != obj.status):
            out.append(obj.status)
    return out


# --- the wire format -----------------------------------------------------------------------------

def test_pagination_walks_every_object_once_newest_first(local, client):
    ids = [client.v1.customers.create(params={"email": f"c{i}@example.org"}).id for i in range(25)]
    page = client.v1.customers.list(params={"limit": 10})
    assert page.object == "list" and page.url == "/v1/customers" and page.has_more is True
    assert [c.id for c in page.data] == ids[::-1][:10]
    walked, after = [], None
    while True:
        params = {"limit": 10, **({"starting_after": after} if after else {})}
        page = client.v1.customers.list(params=params)
        walked += [c.id for c in page.data]
        if not page.has_more:
            break
        after = page.data[-1].id
    assert walked == ids[::-1]
    back = client.v1.customers.list(params={"limit": 5, "ending_before": ids[10]})
    assert [c.id for c in back.data] == ids[15:10:-1] and back.has_more is True
    assert [c.id for c in client.v1.customers.list(params={"limit": 3}).auto_paging_iter()] == ids[::-1]


@pytest.mark.parametrize("limit", ["0", "101", "ten"])
def test_limit_outside_1_to_100_is_refused_naming_the_parameter(local, client, limit):
    status, headers, body = local.raw("GET", f"/v1/customers?limit={limit}")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == "limit"


def test_filtered_lists_page_through_their_index(local, client):
    price = plan(client)
    customers = [customer_with_card(client)[0] for _ in range(3)]
    mine: list[str] = []
    for _ in range(4):
        for c in customers:
            sub = client.v1.subscriptions.create(params={"customer": c.id, "items": [{"price": price.id}]})
            if c.id == customers[1].id:
                mine.append(sub.id)
    walked = [s.id for s in client.v1.subscriptions.list(params={"customer": customers[1].id, "limit": 2})
              .auto_paging_iter()]
    assert walked == mine[::-1]
    page = client.v1.subscriptions.list(params={"customer": customers[1].id, "limit": 2, "ending_before": mine[0]})
    assert [s.id for s in page.data] == [mine[2], mine[1]] and page.has_more is True
    one = client.v1.invoices.list(params={"subscription": mine[0]}).data
    assert len(one) == 1 and one[0].parent.subscription_details.subscription == mine[0]
    assert len(client.v1.invoices.list(params={"customer": customers[0].id, "limit": 100}).data) == 4
    both = local.events(client, types=["customer.subscription.created", "invoice.paid"], limit=5)
    assert len(both) == 24 and [e.created for e in both] == sorted((e.created for e in both), reverse=True)
    ids = [e.id for e in both]
    assert len(set(ids)) == 24


def test_created_filters(local, client):
    ids, stamps = [], []
    for i in range(4):
        c = client.v1.customers.create(params={"email": f"t{i}@example.org"})
        ids.append(c.id)
        stamps.append(c.created)
        local.control("advance", seconds=100)
    listed = lambda **f: [c.id for c in client.v1.customers.list(params={"created": f}).data]  # noqa: E731
    assert listed(gte=stamps[1]) == ids[:0:-1]
    assert listed(gt=stamps[1]) == ids[:1:-1]
    assert listed(lt=stamps[2]) == ids[1::-1]
    assert listed(lte=stamps[2], gte=stamps[1]) == [ids[2], ids[1]]
    assert [c.id for c in client.v1.customers.list(params={"created": stamps[3]}).data] == [ids[3]]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.list(params={"created": {"after": 1}})
    assert err.value.param == "created[after]"


def test_search_subset_with_pages(local, client):
    for i in range(5):
        client.v1.customers.create(params={"email": f"s{i}@example.org", "name": "Same",
                                           "metadata": {"org": "o1" if i % 2 == 0 else "o2"}})
    result = client.v1.customers.search(params={"query": "metadata['org']:'o1' AND name:'Same'", "limit": 2})
    assert result.object == "search_result" and result.url == "/v1/customers/search"
    assert len(result.data) == 2 and result.has_more is True and result.next_page
    rest = client.v1.customers.search(params={"query": "metadata['org']:'o1' AND name:'Same'", "limit": 2,
                                              "page": result.next_page})
    assert len(rest.data) == 1 and rest.has_more is False and rest.next_page is None
    emails = {c.email for c in list(result.data) + list(rest.data)}
    assert emails == {"s0@example.org", "s2@example.org", "s4@example.org"}
    assert [c.email for c in client.v1.customers.search(params={"query": 'email:"s3@example.org"'}).data] == \
        ["s3@example.org"]
    price = plan(client, lookup_key="org-monthly")
    assert client.v1.prices.search(params={"query": "lookup_key:'org-monthly'"}).data[0].id == price.id
    assert client.v1.prices.search(params={"query": f"product:'{price.product}' AND active:'true'"}).data[0].id == price.id
    assert client.v1.products.search(params={"query": "metadata['tier']:'org'"}).data[0].id == price.product
    customer, _ = customer_with_card(client, metadata={"org": "o9"})
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}],
                                                 "metadata": {"org": "o9"}})
    found = client.v1.subscriptions.search(params={"query": "status:'active' AND metadata['org']:'o9'"})
    assert [s.id for s in found.data] == [sub.id]
    for bad in ("email~'x'", "nonsense:'x'", "metadata:'x'", ""):
        with pytest.raises(stripe.InvalidRequestError) as err:
            client.v1.customers.search(params={"query": bad})
        assert err.value.param == "query"


def test_idempotency_key_replays_the_same_response(local, client):
    body = "email=idem%40example.org&metadata[org]=o1"
    first = local.raw("POST", "/v1/customers", body, {"Idempotency-Key": "key-1"})
    again = local.raw("POST", "/v1/customers", body, {"Idempotency-Key": "key-1"})
    assert first[0] == again[0] == 200
    assert first[2] == again[2]
    assert again[1].get("Idempotent-Replayed") == "true" and "Idempotent-Replayed" not in first[1]
    assert len(client.v1.customers.list().data) == 1
    sdk_first = client.v1.customers.create(params={"email": "x@example.org"}, options={"idempotency_key": "key-2"})
    sdk_again = client.v1.customers.create(params={"email": "x@example.org"}, options={"idempotency_key": "key-2"})
    assert sdk_first.id == sdk_again.id
    assert sdk_again.last_response.headers["Idempotent-Replayed"] == "true"


def test_idempotency_key_with_other_parameters_is_refused(local, client):
    client.v1.customers.create(params={"email": "a@example.org"}, options={"idempotency_key": "key-3"})
    with pytest.raises(stripe.IdempotencyError) as err:
        client.v1.customers.create(params={"email": "b@example.org"}, options={"idempotency_key": "key-3"})
    assert err.value.http_status == 400 and "same parameters" in err.value.user_message
    assert [c.email for c in client.v1.customers.list().data] == ["a@example.org"]


def test_a_request_that_failed_validation_saves_no_idempotent_result(local, client):
    status, _, _ = local.raw("POST", "/v1/prices", "currency=usd", {"Idempotency-Key": "key-4"})
    assert status == 400
    product = client.v1.products.create(params={"name": "P"})
    status, _, body = local.raw("POST", "/v1/prices", f"currency=usd&unit_amount=5&product={product.id}",
                                {"Idempotency-Key": "key-4"})
    assert status == 200 and body["object"] == "price"


def test_a_key_still_in_use_answers_409(local, client):
    import threading

    local.control("faults", latency_seconds=1.0)
    results = []
    first = threading.Thread(target=lambda: results.append(
        local.raw("POST", "/v1/customers", "email=slow%40example.org", {"Idempotency-Key": "key-busy"})))
    first.start()
    time.sleep(0.3)
    status, headers, body = local.raw("POST", "/v1/customers", "email=slow%40example.org",
                                      {"Idempotency-Key": "key-busy"})
    first.join()
    assert status == 409 and body["error"]["type"] == "idempotency_error"
    assert headers["Stripe-Should-Retry"] == "true"
    assert results[0][0] == 200


def test_unknown_parameters_are_refused_as_stripe_does(local, client):
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.create(params={"emial": "typo@example.org"})
    assert (err.value.code, err.value.param) == ("parameter_unknown", "emial")
    assert "Received unknown parameter: emial" in err.value.user_message
    price = plan(client)
    customer, _ = customer_with_card(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}],
                                                 "proration_behavior": "none"})  # accepted by Stripe: no error
    assert sub.status == "active"


def test_errors_have_stripes_shape_codes_and_headers(local, client):
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.retrieve("cus_missing")
    assert (err.value.http_status, err.value.code, err.value.param) == (404, "resource_missing", "id")
    assert err.value.request_id and err.value.request_id.startswith("req_")
    with pytest.raises(stripe.AuthenticationError) as auth:
        stripe.StripeClient("pk_live_nope", base_addresses={"api": local.base},
                            max_network_retries=0).v1.customers.list()
    assert auth.value.http_status == 401
    status, _, body = local.raw("GET", "/v1/customers", headers={"Authorization": ""})
    assert status == 401 and "API key" in body["error"]["message"]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.prices.create(params={"currency": "usd", "unit_amount": 5})
    assert (err.value.http_status, err.value.code, err.value.param) == (400, "parameter_missing", "product")
    with pytest.raises(stripe.CardError) as card:
        client.v1.payment_intents.create(params={"amount": 500, "currency": "usd",
                                                 "payment_method": "pm_card_chargeDeclined", "confirm": True})
    assert card.value.http_status == 402 and card.value.code == "card_declined"
    assert card.value.error.decline_code == "generic_decline"
    assert card.value.error.payment_intent.status == "requires_payment_method"
    status, headers, body = local.raw("GET", "/v1/not_a_thing")
    assert status == 404 and set(body) == {"error"} and {"type", "message"} <= set(body["error"])
    assert headers["Request-Id"].startswith("req_")


def test_stripe_version_is_echoed_and_recorded_on_events(local, client):
    status, headers, _ = local.raw("POST", "/v1/customers", "email=v%40example.org",
                                   {"Stripe-Version": "2025-04-30.basil"})
    assert status == 200 and headers["Stripe-Version"] == "2025-04-30.basil"
    created = client.v1.customers.create(params={"email": "w@example.org"})
    assert created.last_response.headers["Stripe-Version"] == API_VERSION
    versions = {e.data.object.email: e.api_version for e in local.events(client, type="customer.created")}
    assert versions == {"v@example.org": "2025-04-30.basil", "w@example.org": API_VERSION}


def test_status_all_and_the_default_list_that_leaves_out_canceled(local, client):
    price = plan(client)
    customer, _ = customer_with_card(client)
    keep = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    gone = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    client.v1.subscriptions.cancel(gone.id)
    assert [s.id for s in client.v1.subscriptions.list().data] == [keep.id]
    assert [s.id for s in client.v1.subscriptions.list(params={"status": "all"}).data] == [gone.id, keep.id]
    assert [s.id for s in client.v1.subscriptions.list(params={"status": "canceled"}).data] == [gone.id]
    assert [s.id for s in client.v1.subscriptions.list(params={"customer": customer.id, "price": price.id}).data] \
        == [keep.id]


def test_expand_on_objects_and_lists(local, client):
    price = plan(client)
    customer, pm = customer_with_card(client)
    sub = client.v1.subscriptions.create(params={
        "customer": customer.id, "items": [{"price": price.id, "quantity": 3}],
        "expand": ["latest_invoice.payments", "customer.invoice_settings.default_payment_method"]})
    assert sub.customer.email == "owner@example.org"
    assert sub.customer.invoice_settings.default_payment_method.id == pm.id
    assert sub.latest_invoice.status == "paid" and sub.latest_invoice.amount_paid == 1500
    pi = sub.latest_invoice.payments.data[0].payment.payment_intent
    assert isinstance(pi, str) and pi.startswith("pi_")
    listed = client.v1.subscriptions.list(params={"expand": ["data.customer"]})
    assert listed.data[0].customer.id == customer.id
    assert sub["items"].data[0].price.unit_amount == 500 and sub["items"].data[0].quantity == 3


# --- state and lifecycle -----------------------------------------------------------------------

def test_create_update_quantity_and_items_records_previous_attributes(local, client):
    price = plan(client)
    extra = plan(client, amount=100)
    customer, _ = customer_with_card(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    item = sub["items"].data[0]
    updated = client.v1.subscriptions.update(sub.id, params={"items": [{"id": item.id, "quantity": 5},
                                                                       {"price": extra.id, "quantity": 2}]})
    assert [(i.price.id, i.quantity) for i in updated["items"].data] == [(price.id, 5), (extra.id, 2)]
    event = local.events(client, type="customer.subscription.updated")[0]
    assert event.data.object.id == sub.id
    assert [i["quantity"] for i in event.data.previous_attributes["items"]["data"]] == [1]
    assert event.request.id and event.request.id.startswith("req_")
    client.v1.subscription_items.update(item.id, params={"quantity": 7})
    assert client.v1.subscription_items.retrieve(item.id).quantity == 7
    listed = client.v1.subscription_items.list(params={"subscription": sub.id})
    assert {i.quantity for i in listed.data} == {7, 2}
    removed = client.v1.subscriptions.update(sub.id, params={"items": [{"id": item.id, "deleted": True}]})
    assert [i.price.id for i in removed["items"].data] == [extra.id]


def test_event_request_carries_the_idempotency_key(local, client):
    client.v1.customers.create(params={"email": "k@example.org"}, options={"idempotency_key": "key-ev"})
    event = local.events(client, type="customer.created")[0]
    assert event.request.idempotency_key == "key-ev" and event.request.id.startswith("req_")
    assert event.livemode is False and event.pending_webhooks == 0 and event.id.startswith("evt_")


def test_trialing_then_active_at_trial_end(local, client):
    price = plan(client)
    customer, _ = customer_with_card(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}],
                                                 "trial_period_days": 14})
    assert sub.status == "trialing" and sub.trial_end == sub.created + 14 * DAY
    assert client.v1.invoices.retrieve(sub.latest_invoice).total == 0
    local.control("advance", seconds=12 * DAY)
    assert [e.data.object.id for e in local.events(client, type="customer.subscription.trial_will_end")] == [sub.id]
    local.control("advance", seconds=3 * DAY)
    after = client.v1.subscriptions.retrieve(sub.id, params={"expand": ["latest_invoice"]})
    assert after.status == "active" and after.latest_invoice.status == "paid" and after.latest_invoice.total == 500
    assert status_changes(local, client, sub.id) == ["trialing", "active"]


def test_incomplete_then_active_when_its_invoice_is_paid(local, client):
    price = plan(client)
    customer, _ = customer_with_card(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}],
                                                 "payment_behavior": "default_incomplete"})
    assert sub.status == "incomplete"
    invoice = client.v1.invoices.pay(sub.latest_invoice)
    assert invoice.status == "paid"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    assert status_changes(local, client, sub.id) == ["incomplete", "active"]


def test_incomplete_expires_after_23_hours(local, client):
    price = plan(client)
    customer = client.v1.customers.create(params={"email": "d@example.org"})
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}],
                                                 "default_payment_method": "pm_card_chargeDeclined"})
    assert sub.status == "incomplete"
    local.control("advance", seconds=22 * 3600)
    assert client.v1.subscriptions.retrieve(sub.id).status == "incomplete"
    local.control("advance", seconds=2 * 3600)
    assert client.v1.subscriptions.retrieve(sub.id).status == "incomplete_expired"
    assert client.v1.invoices.retrieve(sub.latest_invoice).status == "void"


def test_renewal_invoice_is_paid_and_the_period_moves_on(local, client):
    price = plan(client)
    customer, _ = customer_with_card(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    end = sub["items"].data[0].current_period_end
    local.control("advance", seconds=32 * DAY)
    renewed = client.v1.subscriptions.retrieve(sub.id, params={"expand": ["latest_invoice"]})
    assert renewed.status == "active"
    assert renewed["items"].data[0].current_period_start == end
    assert renewed.latest_invoice.billing_reason == "subscription_cycle"
    assert renewed.latest_invoice.status == "paid" and renewed.latest_invoice.period_start == end
    invoices = client.v1.invoices.list(params={"subscription": sub.id}).data
    assert [i.billing_reason for i in invoices] == ["subscription_cycle", "subscription_create"]
    assert len(client.v1.charges.list(params={"customer": customer.id}).data) == 2


@pytest.mark.parametrize("final_action,final_status", [("cancel", "canceled"), ("unpaid", "unpaid")])
def test_failed_renewal_goes_past_due_retries_3_5_7_days_apart_then_the_final_action(
        local, client, final_action, final_status):
    local.control("settings", dunning_final_action=final_action)
    price = plan(client)
    customer, pm = customer_with_card(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    renewal_at = sub["items"].data[0].current_period_end
    local.control(f"payment_methods/{pm.id}/fail")
    local.control("advance", seconds=renewal_at - local.control("clock", "GET")["now"] + 60)
    sub = client.v1.subscriptions.retrieve(sub.id, params={"expand": ["latest_invoice"]})
    assert sub.status == "past_due"
    invoice = sub.latest_invoice
    assert invoice.status == "open" and invoice.attempt_count == 1
    assert invoice.next_payment_attempt == renewal_at + 3 * DAY
    assert client.v1.customers.retrieve(customer.id).delinquent is True
    attempts = [invoice.next_payment_attempt]
    for _ in range(2):
        local.control("advance", seconds=attempts[-1] - local.control("clock", "GET")["now"] + 60)
        invoice = client.v1.invoices.retrieve(invoice.id)
        attempts.append(invoice.next_payment_attempt)
        assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    assert attempts == [renewal_at + 3 * DAY, renewal_at + 8 * DAY, renewal_at + 15 * DAY]
    local.control("advance", seconds=attempts[-1] - local.control("clock", "GET")["now"] + 60)
    assert client.v1.invoices.retrieve(invoice.id).attempt_count == 4
    assert client.v1.subscriptions.retrieve(sub.id).status == final_status
    assert status_changes(local, client, sub.id) == ["active", "past_due", final_status]
    failed = local.events(client, type="invoice.payment_failed")
    assert len(failed) == 4 and {e.data.object.id for e in failed} == {invoice.id}


def test_a_retry_that_succeeds_brings_the_subscription_back_to_active(local, client):
    price = plan(client)
    customer, pm = customer_with_card(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    local.control(f"payment_methods/{pm.id}/fail")
    local.control("advance", seconds=32 * DAY)
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    local.control(f"payment_methods/{pm.id}/succeed")
    local.control("advance", seconds=3 * DAY)
    sub = client.v1.subscriptions.retrieve(sub.id, params={"expand": ["latest_invoice"]})
    assert sub.status == "active" and sub.latest_invoice.status == "paid"
    assert client.v1.customers.retrieve(customer.id).delinquent is False
    assert status_changes(local, client, sub.id) == ["active", "past_due", "active"]


def test_paused_when_a_trial_ends_without_a_payment_method_then_resumed(local, client):
    price = plan(client)
    customer = client.v1.customers.create(params={"email": "p@example.org"})
    sub = client.v1.subscriptions.create(params={
        "customer": customer.id, "items": [{"price": price.id}], "trial_period_days": 7,
        "trial_settings": {"end_behavior": {"missing_payment_method": "pause"}}})
    local.control("advance", seconds=8 * DAY)
    assert client.v1.subscriptions.retrieve(sub.id).status == "paused"
    assert [e.data.object.id for e in local.events(client, type="customer.subscription.paused")] == [sub.id]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.resume(client.v1.subscriptions.create(params={
            "customer": customer_with_card(client)[0].id, "items": [{"price": price.id}]}).id)
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": pm.id}})
    resumed = client.v1.subscriptions.resume(sub.id)
    assert resumed.status == "active"
    assert client.v1.invoices.retrieve(resumed.latest_invoice).status == "paid"
    assert status_changes(local, client, sub.id) == ["trialing", "paused", "active"]


def test_pause_endpoint_and_resume_keeping_the_cycle(local, client):
    price = plan(client)
    customer, _ = customer_with_card(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    paused = client.v1.subscriptions.pause(sub.id)
    assert paused.status == "paused"
    assert status_changes(local, client, sub.id) == ["active", "paused"]
    local.control("advance", seconds=40 * DAY)
    assert len(client.v1.invoices.list(params={"subscription": sub.id}).data) == 1  # nothing billed while paused
    resumed = client.v1.subscriptions.resume(sub.id, params={"billing_cycle_anchor": {"type": "unchanged"}})
    assert resumed.status == "active"
    assert len(client.v1.invoices.list(params={"subscription": sub.id}).data) == 2  # the period had ended
    assert [e.data.object.id for e in local.events(client, type="customer.subscription.resumed")] == [sub.id]
    again = client.v1.subscriptions.pause(sub.id)
    kept = client.v1.subscriptions.resume(again.id, params={"billing_cycle_anchor": {"type": "unchanged"}})
    assert kept["items"].data[0].current_period_end == resumed["items"].data[0].current_period_end
    assert len(client.v1.invoices.list(params={"subscription": sub.id}).data) == 2  # within the period: none


def test_cancel_now_at_period_end_and_undo(local, client):
    price = plan(client)
    customer, _ = customer_with_card(client)
    now_sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    canceled = client.v1.subscriptions.cancel(now_sub.id, params={"cancellation_details": {"comment": "bye"}})
    assert canceled.status == "canceled" and canceled.ended_at and canceled.cancellation_details.comment == "bye"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.cancel(now_sub.id)
    assert [e.data.object.id for e in local.events(client, type="customer.subscription.deleted")] == [now_sub.id]
    later = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    flagged = client.v1.subscriptions.update(later.id, params={"cancel_at_period_end": True})
    assert flagged.cancel_at_period_end is True and flagged.status == "active"
    undone = client.v1.subscriptions.update(later.id, params={"cancel_at_period_end": False})
    assert undone.cancel_at_period_end is False
    client.v1.subscriptions.update(later.id, params={"cancel_at_period_end": True})
    local.control("advance", seconds=32 * DAY)
    ended = client.v1.subscriptions.retrieve(later.id)
    assert ended.status == "canceled" and ended.ended_at == later["items"].data[0].current_period_end
    deleted = local.events(client, type="customer.subscription.deleted")
    assert [e.data.object.id for e in deleted] == [later.id] and deleted[0].created == ended.ended_at


def test_pause_collection_voids_renewal_invoices_until_cleared(local, client):
    price = plan(client)
    customer, _ = customer_with_card(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    paused = client.v1.subscriptions.update(sub.id, params={"pause_collection": {"behavior": "void"}})
    assert paused.pause_collection.behavior == "void" and paused.status == "active"
    local.control("advance", seconds=32 * DAY)
    assert client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(sub.id).latest_invoice).status == "void"
    client.v1.subscriptions.update(sub.id, params={"pause_collection": ""})
    local.control("advance", seconds=31 * DAY)
    assert client.v1.invoices.retrieve(client.v1.subscriptions.retrieve(sub.id).latest_invoice).status == "paid"


def test_checkout_session_completed_as_a_payer_would(local, client):
    price = plan(client)
    session = client.v1.checkout.sessions.create(params={
        "mode": "subscription", "line_items": [{"price": price.id, "quantity": 4}],
        "success_url": "https://example.org/ok", "cancel_url": "https://example.org/no",
        "customer_email": "buyer@example.org", "client_reference_id": "org-42",
        "metadata": {"org": "org-42"}, "subscription_data": {"metadata": {"org": "org-42"}}})
    assert session.status == "open" and session.url.startswith(local.base) and session.amount_total == 2000
    with pytest.raises(urllib.error.HTTPError) as declined:
        local.control(f"checkout_sessions/{session.id}/complete", payment_method="pm_card_chargeDeclined")
    assert declined.value.code == 402 and json.loads(declined.value.read())["error"]["code"] == "card_declined"
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"
    assert client.v1.customers.list().data == [] and client.v1.subscriptions.list(params={"status": "all"}).data == []
    local.control(f"checkout_sessions/{session.id}/complete", payment_method="pm_card_visa")
    done = client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["subscription"]})
    assert done.status == "complete" and done.payment_status == "paid"
    assert done.subscription.status == "active" and done.subscription.metadata["org"] == "org-42"
    assert done.subscription["items"].data[0].quantity == 4
    assert done.customer_details.email == "buyer@example.org" and done.client_reference_id == "org-42"
    completed = local.events(client, type="checkout.session.completed")
    assert [e.data.object.id for e in completed] == [session.id]
    assert completed[0].data.object.subscription == done.subscription.id
    with pytest.raises(urllib.error.HTTPError):
        local.control(f"checkout_sessions/{session.id}/complete")
    items = client.v1.checkout.sessions.line_items.list(session.id)
    assert [(i.price.id, i.quantity) for i in items.data] == [(price.id, 4)]


def test_checkout_with_a_3ds_card_passes_on_the_page_and_fails_off_session_renewals(local, client):
    price = plan(client)
    session = client.v1.checkout.sessions.create(params={
        "mode": "subscription", "line_items": [{"price": price.id}], "success_url": "https://example.org/ok"})
    local.control(f"checkout_sessions/{session.id}/complete", payment_method="pm_card_authenticationRequired")
    sub_id = client.v1.checkout.sessions.retrieve(session.id).subscription
    assert client.v1.subscriptions.retrieve(sub_id).status == "active"
    local.control("advance", seconds=32 * DAY)
    assert client.v1.subscriptions.retrieve(sub_id).status == "past_due"
    failed = local.events(client, type="payment_intent.payment_failed")[0]
    assert failed.data.object.last_payment_error.code == "authentication_required"


def test_refunds_partial_then_full(local, client):
    pi = client.v1.payment_intents.create(params={"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa",
                                                  "confirm": True})
    assert pi.status == "succeeded"
    refund = client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 300})
    assert refund.status == "succeeded" and refund.amount == 300
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert charge.amount_refunded == 300 and charge.refunded is False
    client.v1.refunds.create(params={"charge": charge.id})
    charge = client.v1.charges.retrieve(charge.id)
    assert charge.amount_refunded == 1000 and charge.refunded is True
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.refunds.create(params={"charge": charge.id, "amount": 1})
    assert err.value.code == "charge_already_refunded"
    assert [e.data.object.amount_refunded for e in local.events(client, type="charge.refunded")] == [1000, 300]
    assert len(client.v1.refunds.list(params={"charge": charge.id}).data) == 2


def test_disputes_created_by_control_and_closed(local, client):
    pi = client.v1.payment_intents.create(params={"amount": 900, "currency": "usd", "payment_method": "pm_card_visa",
                                                  "confirm": True})
    dispute = local.control("disputes", charge=pi.latest_charge, reason="fraudulent")
    assert dispute["status"] == "needs_response" and dispute["amount"] == 900
    assert client.v1.charges.retrieve(pi.latest_charge).disputed is True
    closed = client.v1.disputes.close(dispute["id"])
    assert closed.status == "lost"
    won = local.control("disputes", charge=client.v1.payment_intents.create(params={
        "amount": 5, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}).latest_charge)
    assert local.control(f"disputes/{won['id']}/close", status="won")["status"] == "won"
    assert {e.type for e in local.events(client, types=["charge.dispute.created", "charge.dispute.closed"])} == \
        {"charge.dispute.created", "charge.dispute.closed"}


def test_payment_intent_needing_3ds_on_session_and_failing_off_session(local, client):
    customer = client.v1.customers.create(params={"email": "3ds@example.org"})
    pi = client.v1.payment_intents.create(params={"amount": 700, "currency": "usd", "customer": customer.id,
                                                  "payment_method": "pm_card_authenticationRequired",
                                                  "confirm": True})
    assert pi.status == "requires_action" and pi.next_action.type == "use_stripe_sdk"
    assert client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"}).status == "succeeded"
    with pytest.raises(stripe.CardError) as err:
        client.v1.payment_intents.create(params={"amount": 700, "currency": "usd", "customer": customer.id,
                                                 "payment_method": "pm_card_authenticationRequired",
                                                 "confirm": True, "off_session": True})
    assert err.value.code == "authentication_required"
    pending = client.v1.payment_intents.create(params={"amount": 100, "currency": "usd"})
    assert pending.status == "requires_payment_method"
    assert client.v1.payment_intents.cancel(pending.id).status == "canceled"
    assert {e.type for e in local.events(client)} >= {
        "payment_intent.created", "payment_intent.requires_action", "payment_intent.succeeded",
        "payment_intent.payment_failed", "payment_intent.canceled", "charge.succeeded"}


def test_payment_methods_setup_intents_and_the_default(local, client):
    customer = client.v1.customers.create(params={"email": "pm@example.org"})
    seti = client.v1.setup_intents.create(params={"customer": customer.id, "payment_method": "pm_card_visa",
                                                  "usage": "off_session"})
    assert seti.status == "requires_confirmation"
    seti = client.v1.setup_intents.confirm(seti.id)
    assert seti.status == "succeeded"
    pm = client.v1.payment_methods.retrieve(seti.payment_method)
    assert pm.customer == customer.id and pm.card.last4 == "4242"
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": pm.id}})
    assert [p.id for p in client.v1.customers.payment_methods.list(customer.id).data] == [pm.id]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.update(customer.id, params={"invoice_settings": {
            "default_payment_method": client.v1.payment_methods.create(params={
                "type": "card", "card": {"token": "tok_visa"}}).id}})
    client.v1.payment_methods.detach(pm.id)
    assert client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method is None
    at_once = client.v1.customers.create(params={"payment_method": "pm_card_visa",
                                                 "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    default = at_once.invoice_settings.default_payment_method
    assert default.startswith("pm_") and client.v1.payment_methods.retrieve(default).customer == at_once.id
    attached_only = client.v1.customers.create(params={"payment_method": "pm_card_visa"})
    assert attached_only.invoice_settings.default_payment_method is None
    assert {e.type for e in local.events(client)} >= {"setup_intent.created", "setup_intent.succeeded",
                                                      "payment_method.attached", "payment_method.detached"}
    portal = client.v1.billing_portal.sessions.create(params={"customer": customer.id,
                                                              "return_url": "https://example.org"})
    assert portal.url.startswith(local.base) and portal.customer == customer.id


def test_invoices_created_finalized_paid_voided_and_uncollectible(local, client):
    customer, _ = customer_with_card(client)
    draft = client.v1.invoices.create(params={"customer": customer.id, "description": "manual"})
    assert draft.status == "draft"
    final = client.v1.invoices.finalize_invoice(draft.id)
    assert final.status == "open" and final.number
    assert client.v1.invoices.pay(final.id).status == "paid"
    other = client.v1.invoices.finalize_invoice(client.v1.invoices.create(params={"customer": customer.id}).id)
    assert client.v1.invoices.void_invoice(other.id).status == "void"
    third = client.v1.invoices.finalize_invoice(client.v1.invoices.create(params={"customer": customer.id}).id)
    assert client.v1.invoices.mark_uncollectible(third.id).status == "uncollectible"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.void_invoice(draft.id)
    assert {e.type for e in local.events(client)} >= {"invoice.created", "invoice.finalized", "invoice.paid",
                                                      "invoice.voided", "invoice.marked_uncollectible"}


def test_deleted_customer(local, client):
    price = plan(client)
    customer, _ = customer_with_card(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    deleted = client.v1.customers.delete(customer.id)
    assert (deleted.id, deleted.deleted) == (customer.id, True)
    again = client.v1.customers.retrieve(customer.id)
    assert again.deleted is True and again.object == "customer"
    assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"
    event = local.events(client, type="customer.deleted")[0]
    assert event.data.object.id == customer.id and event.data.object.email == "owner@example.org"


def test_events_filters_pagination_and_30_day_retention(local, client):
    for i in range(3):
        client.v1.customers.create(params={"email": f"e{i}@example.org"})
    client.v1.products.create(params={"name": "P"})
    assert len(local.events(client, type="customer.created")) == 3
    assert {e.type for e in local.events(client, types=["product.created", "customer.created"])} == \
        {"product.created", "customer.created"}
    assert {e.type for e in local.events(client, type="customer.*")} == {"customer.created"}
    first = client.v1.events.list(params={"limit": 2})
    assert first.has_more is True and first.url == "/v1/events"
    rest = client.v1.events.list(params={"limit": 2, "starting_after": first.data[-1].id})
    assert {e.id for e in first.data}.isdisjoint({e.id for e in rest.data})
    old_id = first.data[0].id
    local.control("advance", seconds=10 * DAY)
    client.v1.customers.create(params={"email": "late@example.org"})
    late = local.events(client, created={"gt": first.data[0].created})
    assert [e.data.object.email for e in late] == ["late@example.org"]
    assert client.v1.events.retrieve(old_id).id == old_id
    local.control("advance", seconds=21 * DAY)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.retrieve(old_id)
    assert [e.data.object.email for e in local.events(client)] == ["late@example.org"]


def test_test_clock_advance_renews_only_its_own_subscriptions(local, client):
    price = plan(client)
    start = local.control("clock", "GET")["now"]
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": start, "name": "c1"})
    on_clock, _ = customer_with_card(client, test_clock=clock.id)
    off_clock, _ = customer_with_card(client)
    a = client.v1.subscriptions.create(params={"customer": on_clock.id, "items": [{"price": price.id}]})
    b = client.v1.subscriptions.create(params={"customer": off_clock.id, "items": [{"price": price.id}]})
    assert a.test_clock == clock.id and b.test_clock is None
    advanced = client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": start + 40 * DAY})
    assert advanced.frozen_time == start + 40 * DAY and advanced.status == "ready"
    assert len(client.v1.invoices.list(params={"subscription": a.id}).data) == 2
    assert len(client.v1.invoices.list(params={"subscription": b.id}).data) == 1


def test_faults_429_and_5xx_with_should_retry_and_the_sdk_retries_through_them(local, client):
    local.control("faults", rate_429=1.0)
    with pytest.raises(stripe.RateLimitError) as err:
        client.v1.customers.list()
    assert err.value.http_status == 429 and err.value.headers["Stripe-Should-Retry"] == "true"
    local.control("faults", rate_5xx=1.0, status_5xx=503)
    with pytest.raises(stripe.APIError) as err5:
        client.v1.customers.create(params={"email": "x@example.org"})
    assert err5.value.http_status == 503 and err5.value.headers["Stripe-Should-Retry"] == "true"
    local.control("faults", rate_5xx=0.5, seed=7)
    patient = local.client(max_network_retries=8)
    created = [patient.v1.customers.create(params={"email": f"r{i}@example.org"}) for i in range(5)]
    local.control("faults")
    assert len(client.v1.customers.list().data) == 5 == len({c.id for c in created})
    with pytest.raises(urllib.error.HTTPError):
        local.control("faults", rate_429=2)


def test_state_dump_and_reset(local, client):
    client.v1.customers.create(params={"email": "dump@example.org"})
    assert [c["email"] for c in local.control("state/customer", "GET")["data"]] == ["dump@example.org"]
    local.control("reset")
    assert local.control("state/customer", "GET")["data"] == []
    with pytest.raises(urllib.error.HTTPError):
        local.control("state/nothing", "GET")


def test_standalone_entry_point_serves_and_stops_on_sigterm(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "devstack.local_stripe", "--port", str(port)], cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_control/health", timeout=1) as r:
                    assert json.loads(r.read())["api_version"] == API_VERSION
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        client = stripe.StripeClient("sk_test_cli", base_addresses={"api": f"http://127.0.0.1:{port}"})
        assert client.v1.customers.create(params={"email": "cli@example.org"}).email == "cli@example.org"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


# --- delivery into the stack's queue (local_stack) -----------------------------------------------

@pytest.fixture
def stack_stripe(local_stack, stack_env):
    local_stack.stripe_control("reset")
    local_stack.stripe_control("faults")
    local_stack.stripe_control("delivery", mode="eventbridge")
    local_stack.purge("stripe-events")
    yield local_stack.stripe_client(max_network_retries=0)
    local_stack.stripe_control("faults")
    local_stack.stripe_control("delivery", mode="eventbridge")


def _make_events(client) -> list[str]:
    """Six customer.created events; their ids newest first."""
    for i in range(6):
        client.v1.customers.create(params={"email": f"d{i}@example.org"})
    return [e.id for e in client.v1.events.list(params={"limit": 100}).data]


def test_subscription_events_arrive_in_eventbridge_envelopes(local_stack, stack_stripe):
    client = stack_stripe
    price = plan(client)
    customer, _ = customer_with_card(client)
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    assert sub.status == "active"
    local_stack.stripe_control("flush")
    events = client.v1.events.list(params={"limit": 100}).data
    messages = local_stack.receive("stripe-events", len(events), timeout=10)
    envelopes = [json.loads(m["Body"]) for m in messages]
    assert sorted(e["detail"]["id"] for e in envelopes) == sorted(e.id for e in events)
    source = local_stack.env["STRIPE_EVENTBRIDGE_SOURCES"]
    for envelope in envelopes:
        assert envelope["source"] == source
        assert envelope["detail-type"] == envelope["detail"]["type"]
        assert set(envelope) == {"version", "id", "detail-type", "source", "account", "time", "region",
                                 "resources", "detail"}
        assert envelope["detail"]["api_version"] == API_VERSION
        assert envelope["detail"]["pending_webhooks"] == 1
    created = [e for e in envelopes if e["detail-type"] == "customer.subscription.created"]
    assert created and created[0]["detail"]["data"]["object"]["id"] == sub.id
    assert local_stack.env["STRIPE_API_BASE"] == local_stack.stripe_base


def test_webhook_mode_bodies_verify_with_the_sdk(local_stack, stack_stripe):
    local_stack.stripe_control("delivery", mode="webhook")
    ids = _make_events(stack_stripe)
    local_stack.stripe_control("flush")
    messages = local_stack.receive("stripe-events", len(ids), timeout=10)
    secret = local_stack.env["STRIPE_WEBHOOK_SECRET"]
    got = []
    for m in messages:
        header = m["MessageAttributes"]["Stripe-Signature"]
        assert header["DataType"] == "String"
        event = stripe.Webhook.construct_event(m["Body"], header["StringValue"], secret, tolerance=300)
        got.append(event.id)
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(m["Body"].replace("example.org", "example.net"), header["StringValue"],
                                           secret)
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(m["Body"], header["StringValue"], "whsec_wrong")
    assert sorted(got) == sorted(ids)


def test_duplicated_deliveries(local_stack, stack_stripe):
    local_stack.stripe_control("faults", duplicate_rate=1.0, seed=1)
    ids = _make_events(stack_stripe)
    local_stack.stripe_control("flush")
    bodies = [json.loads(m["Body"]) for m in local_stack.receive("stripe-events", 2 * len(ids), timeout=10)]
    assert sorted(b["detail"]["id"] for b in bodies) == sorted(ids * 2)


def test_reordered_deliveries(local_stack, stack_stripe):
    local_stack.stripe_control("faults", reorder_window=12, seed=3)
    ids = _make_events(stack_stripe)  # newest first
    local_stack.stripe_control("flush")
    received = [json.loads(m["Body"])["detail"]["id"] for m in local_stack.receive("stripe-events", len(ids))]
    assert sorted(received) == sorted(ids)
    assert received != ids[::-1]  # not in the order they happened


def test_delayed_deliveries(local_stack, stack_stripe):
    local_stack.stripe_control("faults", delay_rate=1.0, delay_seconds=3)
    ids = _make_events(stack_stripe)
    assert local_stack.receive("stripe-events", 1, timeout=1.5) == []
    assert local_stack.stripe_control("delivery", "GET")["delayed"] == len(ids)
    bodies = [json.loads(m["Body"]) for m in local_stack.receive("stripe-events", len(ids), timeout=10)]
    assert sorted(b["detail"]["id"] for b in bodies) == sorted(ids)
