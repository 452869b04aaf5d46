"""SES notification payloads -> one normalised event per recipient.

Both formats (django-anymail's idea: one vocabulary for both):
- `notificationType` (identity notifications): Delivery, Bounce, Complaint;
- `eventType` (configuration-set event publishing): Send, Delivery, Bounce, Complaint,
  Reject, DeliveryDelay, Open, Click, Rendering Failure, Subscription.

Bounce, Complaint, Delivery and DeliveryDelay fan out per recipient; their event_id is
"<SNS MessageId>:<recipient>". Other types are one event with the SNS MessageId.
`signal` is the state-machine input (status_machine.INPUTS) or None for record-only events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parseaddr

import orjson

from pipelines.email_delivery.vocab import HARD_BOUNCE_TYPES, SOFT_BOUNCE_TYPES

EVENT_TYPES = {
    # payload type -> (normalised event_type, key of the SES object, key of its recipient list)
    "Send": ("Send", "send", None),
    "Delivery": ("Delivery", "delivery", "recipients"),
    "Bounce": ("Bounce", "bounce", "bouncedRecipients"),
    "Complaint": ("Complaint", "complaint", "complainedRecipients"),
    "Reject": ("Reject", "reject", None),
    "DeliveryDelay": ("DeliveryDelay", "deliveryDelay", "delayedRecipients"),
    "Open": ("Open", "open", None),
    "Click": ("Click", "click", None),
    "Rendering Failure": ("RenderingFailure", "failure", None),
    "RenderingFailure": ("RenderingFailure", "failure", None),
    "Subscription": ("Subscription", "subscription", None),
}



class ParseError(ValueError):
    pass


@dataclass(slots=True)
class SesEvent:
    event_id: str
    sns_message_id: str
    message_id: str
    recipient: str | None
    event_type: str
    signal: str | None          # delivery, hard-bounce, soft-bounce, complaint, or None
    bounce_type: str | None
    bounce_subtype: str | None
    occurred_at: datetime
    detail: str                 # JSON of the SES object (bounce, complaint, delivery, ...)


def normalise_address(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ParseError("recipient without an address")
    if "<" in value:
        value = parseaddr(value)[1] or value
    return value.strip().lower()


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def is_ses_payload(obj: object) -> bool:
    return isinstance(obj, dict) and ("notificationType" in obj or "eventType" in obj)


def parse_ses(payload: dict | str, sns_message_id: str, fallback_time: datetime | None = None) -> list[SesEvent]:
    """Events for one SES payload (the SNS Message, or the SQS body under raw delivery)."""
    if isinstance(payload, str):
        try:
            payload = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise ParseError("SNS Message is not JSON (not an SES notification)") from None
    if not is_ses_payload(payload):
        raise ParseError("SNS Message is not an SES notification (no notificationType or eventType)")
    kind = payload.get("eventType") or payload.get("notificationType")
    spec = EVENT_TYPES.get(kind)  # type: ignore[arg-type]
    if spec is None or ("notificationType" in payload and "eventType" not in payload
                        and kind not in ("Delivery", "Bounce", "Complaint")):
        raise ParseError(f"unknown SES notification type {kind!r}")
    event_type, obj_key, recipients_key = spec
    mail = payload.get("mail")
    if not isinstance(mail, dict) or not isinstance(mail.get("messageId"), str) or not mail["messageId"]:
        raise ParseError("SES payload lacks mail.messageId")
    message_id: str = mail["messageId"]
    obj = payload.get(obj_key)
    if obj is None and event_type == "Send":
        obj = {}
    if not isinstance(obj, dict):
        raise ParseError(f"SES {kind} payload lacks its {obj_key!r} object")
    occurred = (parse_time(obj.get("timestamp")) or parse_time(mail.get("timestamp")) or fallback_time)
    if occurred is None:
        raise ParseError("SES payload has no usable timestamp")

    signal: str | None = None
    bounce_type = bounce_subtype = None
    if event_type == "Delivery":
        signal = "delivery"
    elif event_type == "Complaint":
        signal = "complaint"
    elif event_type == "Bounce":
        bounce_type, bounce_subtype = obj.get("bounceType"), obj.get("bounceSubType")
        if bounce_subtype is not None and not isinstance(bounce_subtype, str):
            raise ParseError(f"bounceSubType {bounce_subtype!r} is not a string")
        if bounce_type in HARD_BOUNCE_TYPES:
            signal = "hard-bounce"
        elif bounce_type in SOFT_BOUNCE_TYPES:
            signal = "soft-bounce"
        else:
            raise ParseError(f"unknown bounceType {bounce_type!r}")
    detail = orjson.dumps(obj).decode()

    if recipients_key is None:
        dest = mail.get("destination")
        recipient = normalise_address(dest[0]) if isinstance(dest, list) and len(dest) == 1 else None
        return [SesEvent(sns_message_id, sns_message_id, message_id, recipient, event_type, signal,
                         bounce_type, bounce_subtype, occurred, detail)]

    raw_recipients = obj.get(recipients_key)
    if not isinstance(raw_recipients, list) or not raw_recipients:
        raise ParseError(f"SES {kind} lists no {recipients_key}")
    events: list[SesEvent] = []
    seen: set[str] = set()
    for item in raw_recipients:
        address = normalise_address(item.get("emailAddress") if isinstance(item, dict) else item)
        if address in seen:
            continue
        seen.add(address)
        events.append(SesEvent(f"{sns_message_id}:{address}", sns_message_id, message_id, address,
                               event_type, signal, bounce_type, bounce_subtype, occurred, detail))
    return events
