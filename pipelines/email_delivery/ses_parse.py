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

import re
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


# Controls, DEL and Unicode line separators: never part of an address, an id or a timestamp.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_ID_LENGTH = 256
MAX_ADDRESS_LENGTH = 998      # an SMTP line; real addresses are at most 320
# Notifications are about mail sent this century: a timestamp outside is not real.
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)


def _shown(value: object) -> str:
    if isinstance(value, (dict, list)):
        return f"<{type(value).__name__} of {len(value)}>"
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def check_id(value: object, field: str) -> str:
    """A message id as stored: a non-empty string without control characters."""
    if not isinstance(value, str) or not value:
        raise ParseError(f"{field} missing" if value in (None, "") else f"{field} is not a string")
    if len(value) > MAX_ID_LENGTH or _CONTROL.search(value):
        raise ParseError(f"{field} is not a real id (control character or over {MAX_ID_LENGTH} characters)")
    return value


def normalise_address(value: object, field: str = "recipient") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ParseError(f"{field} without an address")
    if len(value) > MAX_ADDRESS_LENGTH or _CONTROL.search(value):
        raise ParseError(f"{field} is not a real address (control character or over {MAX_ADDRESS_LENGTH} characters)")
    if "<" in value:
        value = parseaddr(value)[1] or value
    return value.strip().lower()


def parse_time(value: object, field: str = "timestamp") -> datetime | None:
    """None when absent; a timestamp that is present but not a real ISO 8601 instant is refused."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParseError(f"{field} is not a string")
    try:
        ts = datetime.fromisoformat(value)
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        if not EARLIEST <= ts < LATEST:
            raise ValueError
    except (ValueError, OverflowError):
        raise ParseError(f"{field} {_shown(value)} is not an ISO 8601 time between 2000 and 2100") from None
    return ts


def signal_of(event_type: str, bounce_type: str | None) -> str | None:
    """The status-machine input of a (normalised) event, as stored in email_events."""
    if event_type == "Delivery":
        return "delivery"
    if event_type == "Complaint":
        return "complaint"
    if event_type == "Bounce":
        return ("hard-bounce" if bounce_type in HARD_BOUNCE_TYPES
                else "soft-bounce" if bounce_type in SOFT_BOUNCE_TYPES else None)
    return None


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
    spec = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if spec is None or ("notificationType" in payload and "eventType" not in payload
                        and kind not in ("Delivery", "Bounce", "Complaint")):
        raise ParseError(f"unknown SES notification type {_shown(kind)}")
    event_type, obj_key, recipients_key = spec
    mail = payload.get("mail")
    if not isinstance(mail, dict) or mail.get("messageId") in (None, ""):
        raise ParseError("SES payload lacks mail.messageId")
    message_id = check_id(mail["messageId"], "mail.messageId")
    obj = payload.get(obj_key)
    if obj is None and event_type == "Send":
        obj = {}
    if not isinstance(obj, dict):
        raise ParseError(f"SES {kind} payload lacks its {obj_key!r} object")
    # The event's own time, else the mail's; the SNS time only when the payload carries neither.
    occurred = (parse_time(obj.get("timestamp"), f"{obj_key}.timestamp")
                or parse_time(mail.get("timestamp"), "mail.timestamp") or fallback_time)
    if occurred is None:
        raise ParseError("SES payload has no usable timestamp")

    bounce_type = bounce_subtype = None
    if event_type == "Bounce":
        bounce_type, bounce_subtype = obj.get("bounceType"), obj.get("bounceSubType")
        if bounce_subtype is not None and not isinstance(bounce_subtype, str):
            raise ParseError(f"bounceSubType {_shown(bounce_subtype)} is not a string")
        if bounce_subtype is not None and (len(bounce_subtype) > 100 or _CONTROL.search(bounce_subtype)):
            raise ParseError(f"bounceSubType {_shown(bounce_subtype)} is not a real subtype")
        if not isinstance(bounce_type, str) or bounce_type not in HARD_BOUNCE_TYPES | SOFT_BOUNCE_TYPES:
            raise ParseError(f"unknown bounceType {_shown(bounce_type)}")
    signal = signal_of(event_type, bounce_type)
    try:
        detail = orjson.dumps(obj).decode()
    except orjson.JSONEncodeError:   # orjson writes at most 254 levels; SES objects have a handful
        raise ParseError(f"SES {obj_key!r} object is nested too deeply") from None

    if recipients_key is None:
        dest = mail.get("destination")
        recipient = normalise_address(dest[0], "mail.destination") if isinstance(dest, list) and len(dest) == 1 else None
        return [SesEvent(sns_message_id, sns_message_id, message_id, recipient, event_type, signal,
                         bounce_type, bounce_subtype, occurred, detail)]

    raw_recipients = obj.get(recipients_key)
    if not isinstance(raw_recipients, list) or not raw_recipients:
        raise ParseError(f"SES {kind} lists no {recipients_key}")
    events: list[SesEvent] = []
    seen: set[str] = set()
    for item in raw_recipients:
        address = normalise_address(item.get("emailAddress") if isinstance(item, dict) else item,
                                    f"{obj_key}.{recipients_key}")
        if address in seen:
            continue
        seen.add(address)
        events.append(SesEvent(f"{sns_message_id}:{address}", sns_message_id, message_id, address,
                               event_type, signal, bounce_type, bounce_subtype, occurred, detail))
    return events
