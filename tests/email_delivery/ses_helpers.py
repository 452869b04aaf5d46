"""Shared helpers for the SES tests: fixtures on disk, a signing identity, envelope builders."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from devstack.sns_signer import generate_signing_identity, notification_envelope, sns_timestamp
from tests.paths import FIXTURES as SHARED_FIXTURES

FIXTURES = SHARED_FIXTURES / "ses"
PINNED_CERTS = FIXTURES / "certs"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-notifications"


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


def fixture_json(name: str):
    return json.loads(fixture_text(name))


def write_identity(cert_dir: Path, identity=None):
    """A signing identity (a fresh one unless given) with its certificate in cert_dir."""
    identity = identity or generate_signing_identity()
    cert_dir.mkdir(parents=True, exist_ok=True)
    (cert_dir / identity.cert_name).write_bytes(identity.cert_pem)
    return identity


def iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


T0 = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)


def ses_message(kind: str, message_id: str, recipients: list[str], at: datetime = T0, *,
                bounce_type: str = "Permanent", bounce_subtype: str = "General", event_format: bool = False) -> str:
    """An SES payload (the SNS Message string) of one type for a message and its recipients."""
    mail = {"timestamp": iso(at - timedelta(seconds=1)), "source": "noreply@mailroom.test",
            "messageId": message_id, "destination": recipients}
    ts = iso(at)
    if kind == "Delivery":
        body = {"delivery": {"timestamp": ts, "recipients": recipients, "processingTimeMillis": 500,
                             "smtpResponse": "250 ok"}}
    elif kind == "Bounce":
        body = {"bounce": {"feedbackId": uuid.uuid4().hex, "bounceType": bounce_type, "bounceSubType": bounce_subtype,
                           "bouncedRecipients": [{"emailAddress": r} for r in recipients], "timestamp": ts}}
    elif kind == "Complaint":
        body = {"complaint": {"feedbackId": uuid.uuid4().hex, "complainedRecipients": [{"emailAddress": r} for r in recipients],
                              "timestamp": ts, "complaintFeedbackType": "abuse"}}
    elif kind == "Open":
        body = {"open": {"timestamp": ts, "ipAddress": "192.0.2.1", "userAgent": "x"}}
    else:
        raise ValueError(kind)
    key = "eventType" if event_format else "notificationType"
    return json.dumps({key: kind, **body, "mail": mail})


def signed(identity, message: str, *, version: str = "2", sns_id: str | None = None,
           topic: str = TOPIC, timestamp: str | None = None) -> str:
    return json.dumps(notification_envelope(identity, topic, message, version=version, message_id=sns_id,
                                            timestamp=timestamp or sns_timestamp()))
