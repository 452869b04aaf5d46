"""Contract: the local Stripe's objects carry every field the SDK's typed resources declare, with
the declared type, and its events have the shape of real Stripe events (tests/fixtures/stripe/).

The emulator runs in process here (no AWS needed) and is reached over HTTP like any Stripe;
the tests that use it are marked integration, the checker's own tests are not.
"""

from __future__ import annotations

import decimal
import hashlib
import hmac
import json
import typing
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import stripe
from stripe import ListObject, SearchResultObject, StripeObject

from devstack.local_stripe.app import Emulator
from devstack.local_stripe.delivery import sign
from devstack.local_stripe.server import StripeServer
from devstack.local_stripe.shapes import SdkNamespace
from tests.paths import FIXTURES as SHARED_FIXTURES

FIXTURES = SHARED_FIXTURES / "stripe"
API_VERSION = stripe.api_version   # the SDK's own version

# the object types the project uses, and the SDK class that declares each
TYPES: dict[str, type[StripeObject]] = {
    "customer": stripe.Customer, "product": stripe.Product, "price": stripe.Price,
    "subscription": stripe.Subscription, "subscription_item": stripe.SubscriptionItem,
    "checkout.session": stripe.checkout.Session, "billing_portal.session": stripe.billing_portal.Session,
    "payment_method": stripe.PaymentMethod, "setup_intent": stripe.SetupIntent, "invoice": stripe.Invoice,
    "payment_intent": stripe.PaymentIntent, "charge": stripe.Charge, "refund": stripe.Refund,
    "dispute": stripe.Dispute, "event": stripe.Event,
}


# --- a type checker driven by the SDK's annotations --------------------------------------------

def declared(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls, None, SdkNamespace(cls.__module__))
    return {k: v for k, v in hints.items()
            if typing.get_origin(v) is not typing.ClassVar and k != "OBJECT_NAME" and not k.startswith("_")}


def problems(value: Any, tp: Any, where: str, depth: int = 0) -> list[str]:
    """Why value does not conform to the annotation tp (empty when it does)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is typing.Any:
        return []
    if origin is typing.Union:
        arms = [problems(value, a, where, depth) for a in args]
        if any(not a for a in arms):
            return []
        structured = [a for a, arm in zip(args, arms) if isinstance(value, dict) and (
            isinstance(typing.get_origin(a) or a, type) and issubclass(typing.get_origin(a) or a, StripeObject))]
        if len(structured) == 1:  # Optional[Nested]: say what is wrong inside it
            return arms[list(args).index(structured[0])]
        return [f"{where}: {value!r:.60} matches none of {tp}"]
    if tp is type(None):
        return [] if value is None else [f"{where}: expected null"]
    if origin is typing.Literal:
        return [] if value in args else [f"{where}: {value!r} not one of {args}"]
    if tp is bool:
        return [] if isinstance(value, bool) else [f"{where}: expected bool, got {type(value).__name__}"]
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected int, got {type(value).__name__}"]
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected number, got {type(value).__name__}"]
    if tp is str:
        return [] if isinstance(value, str) else [f"{where}: expected str, got {type(value).__name__}"]
    if tp is decimal.Decimal:  # decimals travel as strings
        return [] if isinstance(value, str) else [f"{where}: expected a decimal string"]
    if origin in (list, typing.List):
        if not isinstance(value, list):
            return [f"{where}: expected list, got {type(value).__name__}"]
        return [p for i, v in enumerate(value) for p in problems(v, args[0], f"{where}[{i}]", depth)] if args else []
    if origin in (dict, typing.Dict):
        return [] if isinstance(value, dict) else [f"{where}: expected hash"]
    cls = origin or tp
    if isinstance(cls, type) and issubclass(cls, (ListObject, SearchResultObject)):
        if not isinstance(value, dict) or value.get("object") not in ("list", "search_result"):
            return [f"{where}: expected a list object"]
        if args and not isinstance(args[0], typing.ForwardRef):
            return [p for i, v in enumerate(value["data"]) for p in problems(v, args[0], f"{where}.data[{i}]", depth)]
        return []
    if isinstance(cls, type) and issubclass(cls, StripeObject):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        if cls.__name__ == "UntypedStripeObject" or depth > 8:
            return []
        return object_problems(value, cls, where, depth + 1)
    return []


def object_problems(obj: dict[str, Any], cls: type, where: str, depth: int = 0) -> list[str]:
    found = []
    for name, tp in declared(cls).items():
        if name not in obj:
            found.append(f"{where}.{name}: missing (declared {tp})")
        else:
            found.extend(problems(obj[name], tp, f"{where}.{name}", depth))
    return found


def test_the_checker_refuses_what_does_not_conform():
    good = {"id": "in_1", "object": "invoice"}
    assert object_problems(good, stripe.Invoice, "invoice")  # almost everything is missing
    assert problems("3", int, "q") == ["q: expected int, got str"]
    assert problems(True, int, "q")
    assert problems(None, typing.Optional[int], "q") == []
    assert problems({"object": "list", "data": [{"id": 1}]}, declared(stripe.Subscription)["items"], "items")
    assert problems("sub_1", typing.Union[str, stripe.Subscription], "s") == []


# --- the emulator, populated with one of everything --------------------------------------------

@pytest.fixture(scope="module")
def world():
    server = StripeServer(Emulator(), port=0)
    server.start_background()
    base = f"http://127.0.0.1:{server.port}"

    def control(path: str, method: str = "POST", **body: Any) -> Any:
        req = urllib.request.Request(f"{base}/_control/{path}", method=method,
                                     data=json.dumps(body).encode() if method == "POST" else None)
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())

    client = stripe.StripeClient("sk_test_contract", base_addresses={"api": base}, stripe_version=API_VERSION)
    product = client.v1.products.create(params={"name": "Plan", "metadata": {"billing_service": "pypi"}})
    price = client.v1.prices.create(params={"product": product.id, "unit_amount": 700, "currency": "usd",
                                            "recurring": {"interval": "month"}})
    session = client.v1.checkout.sessions.create(params={
        "mode": "subscription", "line_items": [{"price": price.id, "quantity": 2}],
        "success_url": "https://example.org/ok", "customer_email": "owner@example.org"})
    done = control(f"checkout_sessions/{session.id}/complete", payment_method="pm_card_visa")
    customer = done["customer"]
    client.v1.billing_portal.sessions.create(params={"customer": customer, "return_url": "https://example.org"})
    client.v1.setup_intents.create(params={"customer": customer, "payment_method": "pm_card_mastercard",
                                           "confirm": True})
    charge = client.v1.charges.list(params={"customer": customer}).data[0]
    client.v1.refunds.create(params={"charge": charge.id, "amount": 100})
    control("disputes", charge=charge.id)
    declined = client.v1.customers.create(params={"email": "declined@example.org"})
    client.v1.subscriptions.create(params={"customer": declined.id, "items": [{"price": price.id}],
                                           "default_payment_method": "pm_card_chargeDeclined"})
    client.v1.subscriptions.update(done["subscription"], params={"cancel_at_period_end": True})
    early_events = control("state/event", "GET")["data"]  # 30 days on, Stripe (and we) drop them
    control("advance", seconds=40 * 86400)  # renewals, expiries, cancellations
    yield {"client": client, "control": control, "customer": customer, "subscription": done["subscription"],
           "events": early_events + control("state/event", "GET")["data"]}
    server.shutdown()
    server.emulator.close()


@pytest.mark.integration  # starts the emulator's HTTP server
@pytest.mark.parametrize("object_name", sorted(TYPES))
def test_every_declared_field_with_its_declared_type(world, object_name):
    if object_name == "subscription_item":
        objects = [it for sub in world["control"]("state/subscription", "GET")["data"] for it in sub["items"]["data"]]
    else:
        objects = world["control"](f"state/{object_name}", "GET")["data"]
    assert objects, f"the scenario made no {object_name}"
    for obj in objects:
        assert obj["object"] == object_name
        assert object_problems(obj, TYPES[object_name], f"{object_name} {obj['id']}") == []


@pytest.mark.integration  # starts the emulator's HTTP server
def test_event_payloads_conform_to_their_object_type(world):
    events = world["events"]
    seen = set()
    for event in events:
        obj = event["data"]["object"]
        if obj["object"] in TYPES:
            seen.add(obj["object"])
            assert object_problems(obj, TYPES[obj["object"]], f"{event['type']} {event['id']}") == []
    assert {"customer", "subscription", "invoice", "payment_intent", "charge", "checkout.session",
            "payment_method", "setup_intent", "refund", "dispute", "price", "product"} <= seen


@pytest.mark.integration  # starts the emulator's HTTP server
def test_api_responses_are_the_rendered_state(world):
    client = world["client"]
    sub = client.v1.subscriptions.retrieve(world["subscription"])
    stored = next(s for s in world["control"]("state/subscription", "GET")["data"] if s["id"] == sub.id)
    assert json.loads(str(sub)) == stored


# --- real Stripe payloads ------------------------------------------------------------------------

REAL_EVENTS = sorted(p for p in FIXTURES.glob("stripe-event_*.json"))


@pytest.mark.integration  # starts the emulator's HTTP server
@pytest.mark.parametrize("path", REAL_EVENTS, ids=lambda p: p.name)
def test_real_events_parse_and_have_our_events_shape(world, path):
    raw = json.loads(path.read_text())
    event = stripe.Event.construct_from(raw, "sk_test_contract")
    assert event.id == raw["id"] and event.type == raw["type"]
    assert isinstance(event.data.object, StripeObject)
    ours = world["client"].v1.events.list(params={"type": raw["type"], "limit": 1}).data \
        or world["client"].v1.events.list(params={"limit": 1}).data
    mine = json.loads(str(ours[0]))
    assert set(raw) <= set(mine), f"keys only in the real event: {set(raw) - set(mine)}"
    assert set(raw["data"]) <= {"object", "previous_attributes"} and set(mine["data"]) == {"object", "previous_attributes"}
    assert set(raw["request"]) == set(mine["request"]) == {"id", "idempotency_key"}
    for key in ("id", "type", "api_version"):
        assert isinstance(raw[key], str) and isinstance(mine[key], str)
    assert isinstance(raw["created"], int) and isinstance(mine["created"], int)
    assert raw["object"] == mine["object"] == "event"
    assert raw["data"]["object"]["object"] == raw["type"].rsplit(".", 1)[0].replace("customer.subscription", "subscription").replace("charge.dispute", "dispute")


@pytest.mark.integration  # starts the emulator's HTTP server
def test_real_eventbridge_envelope_has_our_envelope_keys(world):
    from devstack.local_stripe.delivery import DeliveryConfig, eventbridge_body

    real = json.loads((FIXTURES / "eventbridge_stripe_charge.succeeded.real.json").read_text())
    event = world["client"].v1.events.list(params={"limit": 1}).data[0]
    ours = json.loads(eventbridge_body(DeliveryConfig(source_id="acct_x"), event.type, event.created, str(event)))
    assert set(real) == set(ours)
    assert real["source"].startswith("aws.partner/stripe.com/") and ours["source"] == "aws.partner/stripe.com/acct_x"
    assert ours["resources"] == ["arn:aws:events:us-east-1::event-source/aws.partner/stripe.com/acct_x"]
    assert real["detail-type"] == real["detail"]["type"] and ours["detail-type"] == ours["detail"]["type"]
    stripe.Event.construct_from(real["detail"], "sk_test_contract")


@pytest.mark.parametrize("name", ["stripe-webhook-signed_invoiceitem.created.async-stripe.json",
                                  "stripe-webhook-signed_invoiceitem.created.async-stripe_older.json"])
def test_our_signer_reproduces_real_stripe_signatures(name):
    sample = json.loads((FIXTURES / name).read_text())
    parts = dict(kv.split("=", 1) for kv in sample["header"].split(","))
    assert sign(sample["body"], sample["secret"], sample["timestamp"]) == f"t={parts['t']},v1={parts['v1']}"


def test_object_fixtures_from_stripes_openapi_parse():
    fixtures = json.loads((FIXTURES / "stripe-object-fixtures_selected.stripe-openapi-fixtures3.json").read_text())
    assert {"customer", "subscription", "invoice", "charge", "event"} <= set(fixtures)
    for name, obj in fixtures.items():
        parsed = StripeObject.construct_from(obj, "sk_test_contract")
        assert parsed["id"] == obj["id"] and parsed["object"] == obj["object"], name


def test_hmac_is_the_stripe_scheme():
    t, payload, secret = 1700000000, '{"id":"evt_1"}', "whsec_x"
    expected = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    assert sign(payload, secret, t) == f"t={t},v1={expected}"
