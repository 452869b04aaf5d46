"""Open one stripe-events queue message: a Stripe event, or a refusal naming what was wrong.

Two deliveries reach the queue:
- Stripe's Amazon EventBridge integration (the production path): an EventBridge event whose
  `source` is the partner event source `aws.partner/stripe.com/<id>`, `detail-type` the event
  type and `detail` the event. Accepted only from an allow-listed `source`.
- A webhook body forwarded as is (API Gateway -> SQS), its `Stripe-Signature` header carried as
  an SQS message attribute. Verified with the SDK against the webhook secret; the timestamp
  must be within the tolerance of when the message reached us.

`open_message` never raises: every problem becomes a `Refusal` whose reason is stored with the
raw body in quarantine.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import stripe

from pipelines.common.redaction import RedactionRules

MAX_BODY_BYTES = 256 * 1024  # SQS's and EventBridge's own limit
SIGNATURE_ATTRIBUTE = "Stripe-Signature"
# A signed webhook is quarantined with its signature, so a replay (after a secret is fixed, or
# a handler) verifies it again: {"sqs_message_attributes": {"Stripe-Signature": ...}, "body": ...}.
KEPT_ATTRIBUTES = "sqs_message_attributes"
# Quarantine keeps that signature as it is (it is no credential: worth nothing for another body);
# a body in which the kit masks a secret no longer verifies, and its replay says so.
KEPT_REDACTION = RedactionRules(verbatim=frozenset({(KEPT_ATTRIBUTES, SIGNATURE_ATTRIBUTE)}))


@dataclass(frozen=True)
class EnvelopeSettings:
    eventbridge_sources: frozenset[str]
    webhook_secret: str | None
    tolerance_seconds: int = 300  # 0: no age limit

    @classmethod
    def from_strings(cls, sources: str, webhook_secret: str | None, tolerance_seconds: int = 300
                     ) -> EnvelopeSettings:
        return cls(frozenset(s.strip() for s in sources.split(",") if s.strip()), webhook_secret or None,
                   tolerance_seconds)

    def __repr__(self) -> str:  # the secret stays out of logs
        return f"EnvelopeSettings(eventbridge_sources={sorted(self.eventbridge_sources)!r}, " \
               f"tolerance_seconds={self.tolerance_seconds})"


@dataclass(frozen=True)
class StripeEvent:
    id: str
    type: str
    created: int            # epoch seconds
    api_version: str | None
    livemode: bool
    object: dict[str, Any]  # data.object
    object_type: str
    object_id: str
    delivery: str           # "eventbridge" or "webhook"


@dataclass(frozen=True)
class Refusal:
    reason: str


def kept_body(body: str, attributes: Mapping[str, str] | None) -> str:
    """What quarantine is handed of a message: the body, wrapped with its signature when it has
    one. The kit redacts it (KEPT_REDACTION) before it is written."""
    signature = (attributes or {}).get(SIGNATURE_ATTRIBUTE)
    if not isinstance(signature, str):
        return body
    return orjson.dumps({KEPT_ATTRIBUTES: {SIGNATURE_ATTRIBUTE: signature}, "body": body}).decode()


def _unwrap_kept(doc: dict) -> tuple[str, dict[str, str]] | None:
    if set(doc) != {KEPT_ATTRIBUTES, "body"}:
        return None
    attrs, body = doc[KEPT_ATTRIBUTES], doc["body"]
    if not isinstance(body, str) or not isinstance(attrs, dict) or \
            not isinstance(attrs.get(SIGNATURE_ATTRIBUTE), str):
        return None
    return body, {SIGNATURE_ATTRIBUTE: attrs[SIGNATURE_ATTRIBUTE]}


def open_message(body: str, attributes: Mapping[str, str], settings: EnvelopeSettings,
                 received_at: datetime | None = None) -> StripeEvent | Refusal:
    try:
        return _open(body, attributes, settings, received_at)
    except Exception as exc:  # a bug must not stop the batch; the message is kept in quarantine
        return Refusal(f"unexpected error opening the message: {type(exc).__name__}")


def _open(body: str, attributes: Mapping[str, str], settings: EnvelopeSettings,
          received_at: datetime | None) -> StripeEvent | Refusal:
    if not isinstance(body, str):
        return Refusal(f"message body is {type(body).__name__}, expected text")
    if len(body) > MAX_BODY_BYTES:
        return Refusal(f"message body is {len(body)} characters, over the {MAX_BODY_BYTES} limit")
    signature = attributes.get(SIGNATURE_ATTRIBUTE) if isinstance(attributes, Mapping) else None
    if signature is not None:
        refused = _verify_webhook(body, signature, settings, received_at)
        if refused:
            return refused
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return Refusal(f"malformed JSON: {exc}")
    if not isinstance(doc, dict):
        return Refusal(f"message body is a JSON {type(doc).__name__}, expected an object")
    if signature is not None:
        return event_from(doc, "webhook")
    kept = _unwrap_kept(doc)
    if kept is not None:  # a quarantined webhook, replayed: verified again like the first time
        return _open(kept[0], kept[1], settings, received_at)
    if "detail-type" in doc or "detail" in doc or "source" in doc:
        return _from_eventbridge(doc, settings)
    if doc.get("object") == "event":
        return Refusal(f"webhook body without a {SIGNATURE_ATTRIBUTE} message attribute")
    return Refusal("neither an EventBridge envelope (source, detail-type, detail) nor a signed webhook body")


def _verify_webhook(body: str, signature: str, settings: EnvelopeSettings,
                    received_at: datetime | None) -> Refusal | None:
    if not settings.webhook_secret:
        return Refusal("signed webhook body, but no webhook secret is configured to verify it")
    try:
        stripe.WebhookSignature.verify_header(body, signature, settings.webhook_secret, tolerance=None)
    except stripe.SignatureVerificationError as exc:
        return Refusal(f"bad Stripe-Signature: {exc.user_message or exc}")
    if settings.tolerance_seconds:
        timestamp = _signed_at(signature)
        now = received_at.timestamp() if received_at is not None else time.time()
        if timestamp is None:
            return Refusal("bad Stripe-Signature: no timestamp")
        if timestamp < now - settings.tolerance_seconds:
            return Refusal(f"stale Stripe-Signature: signed at {timestamp}, {int(now - timestamp)} s before it "
                           f"reached us (tolerance {settings.tolerance_seconds} s)")
    return None


def _signed_at(header: str) -> int | None:
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            return int(value)
    return None


def _from_eventbridge(doc: dict, settings: EnvelopeSettings) -> StripeEvent | Refusal:
    source, detail_type, detail = doc.get("source"), doc.get("detail-type"), doc.get("detail")
    if not isinstance(source, str):
        return Refusal("EventBridge envelope lacks a string source")
    if source not in settings.eventbridge_sources:
        return Refusal(f"EventBridge source {source!r} is not in STRIPE_EVENTBRIDGE_SOURCES")
    if not isinstance(detail, dict):
        return Refusal("EventBridge envelope lacks a detail object")
    event = event_from(detail, "eventbridge")
    if isinstance(event, StripeEvent) and detail_type != event.type:
        return Refusal(f"EventBridge detail-type {detail_type!r} differs from the event type {event.type!r}")
    return event


def event_from(doc: dict, delivery: str) -> StripeEvent | Refusal:
    """Check the fields every handler relies on; name the first that is missing or mistyped."""
    fields: list[tuple[str, Any, type | tuple[type, ...]]] = [
        ("id", doc.get("id"), str), ("type", doc.get("type"), str), ("created", doc.get("created"), int)]
    for name, value, kind in fields:
        if value is None:
            return Refusal(f"event lacks {name}")
        if not isinstance(value, kind) or isinstance(value, bool):
            return Refusal(f"event {name} is {type(value).__name__}, expected {kind.__name__}")
    if doc.get("object", "event") != "event":
        return Refusal(f"object is {doc.get('object')!r}, expected 'event'")
    if not 0 < doc["created"] < 2**35:
        return Refusal(f"event created {doc['created']} is not a plausible time")
    if not doc["id"].startswith("evt_") or len(doc["id"]) > 255:
        return Refusal(f"event id {doc['id'][:40]!r} does not start with evt_")
    api_version = doc.get("api_version")
    if api_version is not None and not isinstance(api_version, str):
        return Refusal(f"event api_version is {type(api_version).__name__}, expected str")
    livemode = doc.get("livemode", False)
    if not isinstance(livemode, bool):
        return Refusal(f"event livemode is {type(livemode).__name__}, expected bool")
    data = doc.get("data")
    if not isinstance(data, dict):
        return Refusal("event lacks data")
    obj = data.get("object")
    if not isinstance(obj, dict):
        return Refusal("event lacks data.object")
    object_type, object_id = obj.get("object"), obj.get("id")
    if not isinstance(object_type, str) or not isinstance(object_id, str) or not object_id:
        return Refusal("event data.object lacks a string id and object")
    return StripeEvent(doc["id"], doc["type"], doc["created"], api_version, livemode, obj, object_type,
                       object_id, delivery)
