"""Every published sample (ses-*, sns_*, sqs_* in tests/fixtures/ses) through the ingestor:
parsed into events, or refused with a clear reason. Pinned certificates, age check off."""

from __future__ import annotations

import json

import pytest

from pipelines.common.queue_message import QueueMessage
from pipelines.common.sns.cert_store import CertStore
from pipelines.email_delivery.consumer import SesNotificationConsumer
from pipelines.common.sns.verify import SnsVerifier
from tests.email_delivery.ses_helpers import FIXTURES, PINNED_CERTS, fixture_text

NOT_SES = "SNS Message is not"
NO_CERT = "not in the local certificate store"

# sample -> ("events", [event types]) | ("control", action) | ("refused", reason fragment)
SNS_EXPECTED = {
    "sns_notification_ses-bounce-permanent-general_no-subject_sv1.verified.json": ("events", ["Bounce"]),
    "sns_notification_ses-event-complaint_sv1.verified.json": ("events", ["Complaint"]),
    "sns_notification_sv1_no-subject.verified.json": ("refused", NOT_SES),
    "sns_notification_sv1_with-subject.verified.json": ("refused", NOT_SES),
    "sns_notification_sv2_no-subject.verified.json": ("refused", NOT_SES),
    "sns_notification_sv2_with-subject.verified.json": ("refused", NOT_SES),
    "sns_subscription-confirmation_sv2.verified.json": ("control", "confirmed"),
    "sns_notification_ses-bounce-permanent-suppressed_sv1.real-unverified.json": ("refused", NO_CERT),
    "sns_notification_sv1.awsdocs.json": ("refused", NO_CERT),
    "sns_subscription-confirmation_sv1.awsdocs.json": ("refused", NO_CERT),
    "sns_unsubscribe-confirmation_sv1.awsdocs.json": ("refused", NO_CERT),
    "sqs_message-body_sns-envelope_raw-delivery-disabled.awsdocs.json": ("refused", NO_CERT),
}
# Lambda SQS events: each record's body is what SQS would hand us.
SQS_EVENT_EXPECTED = {
    "sqs_lambda-event_sns-envelope-in-body.powertools.json": ("refused", NO_CERT),
    "sqs_lambda-event_sns-envelope-in-body_fifo.powertools.json": ("refused", "unsupported SignatureVersion None"),
}


def _all_topics() -> list[str]:
    topics = []
    for name in SNS_EXPECTED:
        topics.append(json.loads(fixture_text(name))["TopicArn"])
    for name in SQS_EVENT_EXPECTED:
        for rec in json.loads(fixture_text(name))["Records"]:
            topics.append(json.loads(rec["body"])["TopicArn"])
    return topics


@pytest.fixture
def ingestor():
    verifier = SnsVerifier(_all_topics(), CertStore(PINNED_CERTS), max_age_seconds=0)
    return SesNotificationConsumer(verifier, confirm=lambda topic, token: f"{topic}:confirmed")


def _outcome(ingestor, body: str):
    prepared = ingestor.prepare([QueueMessage("sqs-1", "rh", body)])
    reason = prepared.outcomes["sqs-1"]
    if reason is not None:
        return ("refused", reason)
    if prepared.controls:
        return ("control", prepared.controls[0].action)
    return ("events", prepared.events.column("event_type").to_pylist())


def test_every_sns_and_sqs_sample_is_listed():
    names = {p.name for p in FIXTURES.glob("sns_*.json")} | {p.name for p in FIXTURES.glob("sqs_*.json")}
    assert names == set(SNS_EXPECTED) | set(SQS_EVENT_EXPECTED)


@pytest.mark.parametrize("name", sorted(SNS_EXPECTED))
def test_sns_sample(ingestor, name):
    kind, expected = SNS_EXPECTED[name]
    got_kind, got = _outcome(ingestor, fixture_text(name))
    assert got_kind == kind
    if kind == "refused":
        assert expected in got
    else:
        assert got == expected


@pytest.mark.parametrize("name", sorted(SQS_EVENT_EXPECTED))
def test_sqs_lambda_event_sample(ingestor, name):
    kind, fragment = SQS_EVENT_EXPECTED[name]
    for rec in json.loads(fixture_text(name))["Records"]:
        got_kind, reason = _outcome(ingestor, rec["body"])
        assert got_kind == kind and fragment in reason


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("ses-*.json")))
def test_raw_ses_sample_is_refused_by_default_and_parsed_when_raw_is_accepted(ingestor, name):
    text = fixture_text(name)
    value = json.loads(text)
    body = value if isinstance(value, str) else text
    kind, reason = _outcome(ingestor, body)
    assert kind == "refused" and "SES_ACCEPT_RAW is off" in reason
    raw = SesNotificationConsumer(ingestor.verifier, accept_raw=True)
    kind, events = _outcome(raw, body)
    assert kind == "events" and events
