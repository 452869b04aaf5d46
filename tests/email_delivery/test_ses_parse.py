"""SES payloads in both formats -> one vocabulary, fanned out per recipient."""

from __future__ import annotations

import json

import pytest

from pipelines.email_delivery.ses_parse import ParseError, parse_ses
from tests.email_delivery.ses_helpers import FIXTURES, fixture_text

# sample -> [(event_type, signal, recipient, bounce_type, bounce_subtype)]
EXPECTED = {
    "ses-event_bounce.awsdocs.json": [("Bounce", "hard-bounce", "recipient@example.com", "Permanent", "General")],
    "ses-event_bounce_transient_general.real.json": [("Bounce", "soft-bounce", "user@company.com", "Transient", "General")],
    "ses-event_click.awsdocs.json": [("Click", None, "recipient@example.com", None, None)],
    "ses-event_complaint.awsdocs.json": [("Complaint", "complaint", "recipient@example.com", None, None)],
    "ses-event_complaint_simulator.real.json": [("Complaint", "complaint", "complaint@simulator.amazonses.com", None, None)],
    "ses-event_delivery-delay.awsdocs.json": [("DeliveryDelay", None, "recipient@example.com", None, None)],
    "ses-event_delivery.awsdocs.json": [("Delivery", "delivery", "recipient@example.com", None, None)],
    "ses-event_open.awsdocs.json": [("Open", None, "recipient@example.com", None, None)],
    "ses-event_reject.awsdocs.json": [("Reject", None, "sender@example.com", None, None)],
    "ses-event_rendering-failure.awsdocs.json": [("RenderingFailure", None, "recipient@example.com", None, None)],
    "ses-event_send.awsdocs.json": [("Send", None, "recipient@example.com", None, None)],
    "ses-event_subscription.awsdocs.json": [("Subscription", None, "recipient@example.com", None, None)],
    "ses-notification_bounce_permanent_general_no-dsn.awsdocs.json": [
        ("Bounce", "hard-bounce", "jane@example.com", "Permanent", "General"),
        ("Bounce", "hard-bounce", "richard@example.com", "Permanent", "General")],
    "ses-notification_bounce_permanent_general_simulator.real.json": [
        ("Bounce", "hard-bounce", "bounce@simulator.amazonses.com", "Permanent", "General")],
    "ses-notification_bounce_permanent_general_with-dsn.awsdocs.json": [
        ("Bounce", "hard-bounce", "jane@example.com", "Permanent", "General")],
    "ses-notification_bounce_permanent_suppressed_simulator.real.json": [
        ("Bounce", "hard-bounce", "suppressionlist@simulator.amazonses.com", "Permanent", "Suppressed")],
    "ses-notification_bounce_transient_general.real.json": [
        ("Bounce", "soft-bounce", "chintu@mailinatorc.com", "Transient", "General")],
    "ses-notification_complaint_with-feedback-report.awsdocs.json": [("Complaint", "complaint", "richard@example.com", None, None)],
    "ses-notification_complaint_without-feedback-report.awsdocs.json": [("Complaint", "complaint", "richard@example.com", None, None)],
    "ses-notification_delivery.awsdocs.json": [("Delivery", "delivery", "jane@example.com", None, None)],
}


def _message(name: str) -> str:
    text = fixture_text(name)
    value = json.loads(text)
    return value if isinstance(value, str) else text  # some samples are the exact Message string


def test_every_ses_sample_is_listed():
    assert set(EXPECTED) == {p.name for p in FIXTURES.glob("ses-*.json")}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample(name):
    events = parse_ses(_message(name), "sns-1")
    assert [(e.event_type, e.signal, e.recipient, e.bounce_type, e.bounce_subtype) for e in events] == EXPECTED[name]
    payload = json.loads(_message(name))
    for e in events:
        assert e.message_id == payload["mail"]["messageId"]
        assert e.sns_message_id == "sns-1"
        assert e.event_id == (f"sns-1:{e.recipient}" if e.event_type in ("Bounce", "Complaint", "Delivery", "DeliveryDelay")
                              else "sns-1")
        assert e.occurred_at.tzinfo is not None
        json.loads(e.detail)


def test_both_formats_give_the_same_events():
    classic = json.loads(_message("ses-notification_bounce_permanent_general_no-dsn.awsdocs.json"))
    event_format = {"eventType": classic.pop("notificationType"), **classic}
    a = parse_ses(json.dumps(classic | {"notificationType": "Bounce"}), "s")
    b = parse_ses(json.dumps(event_format), "s")
    assert a == b


def test_undetermined_bounce_is_soft_and_addresses_are_normalised():
    payload = {"notificationType": "Bounce", "mail": {"messageId": "m", "timestamp": "2026-01-01T00:00:00Z"},
               "bounce": {"bounceType": "Undetermined", "bounceSubType": "Undetermined",
                          "bouncedRecipients": [{"emailAddress": "Jane Doe <Jane@Example.COM>"},
                                                {"emailAddress": "jane@example.com"}]}}
    events = parse_ses(json.dumps(payload), "s")
    assert [(e.recipient, e.signal, e.occurred_at.year) for e in events] == [("jane@example.com", "soft-bounce", 2026)]


@pytest.mark.parametrize("payload,reason", [
    ("not json", "not JSON"),
    ('{"hello": "world"}', "not an SES notification"),
    ('{"notificationType": "Open", "mail": {"messageId": "m"}}', "unknown SES notification type"),
    ('{"eventType": "Teleport", "mail": {"messageId": "m"}}', "unknown SES notification type"),
    ('{"notificationType": "Delivery", "delivery": {"recipients": ["a@x"]}}', "mail.messageId"),
    ('{"notificationType": "Delivery", "mail": {"messageId": "m", "timestamp": "2026-01-01T00:00:00Z"}}', "delivery"),
    ('{"notificationType": "Delivery", "mail": {"messageId": "m"}, "delivery": {"timestamp": "2026-01-01T00:00:00Z", "recipients": []}}', "no recipients"),
    ('{"notificationType": "Bounce", "mail": {"messageId": "m"}, "bounce": {"timestamp": "2026-01-01T00:00:00Z", "bounceType": "Weird", "bouncedRecipients": [{"emailAddress": "a@x"}]}}', "unknown bounceType"),
    ('{"notificationType": "Complaint", "mail": {"messageId": "m"}, "complaint": {"complainedRecipients": [{"emailAddress": "a@x"}]}}', "timestamp"),
    ('{"notificationType": "Bounce", "mail": {"messageId": "m"}, "bounce": {"timestamp": "2026-01-01T00:00:00Z", "bounceType": "Permanent", "bounceSubType": 7, "bouncedRecipients": [{"emailAddress": "a@x"}]}}', "bounceSubType 7 is not a string"),
    ('{"notificationType": "Complaint", "mail": {"messageId": "m"}, "complaint": {"timestamp": "2026-01-01T00:00:00Z", "complainedRecipients": [{}]}}', "without an address"),
])
def test_malformed_payloads_are_refused(payload, reason):
    with pytest.raises(ParseError, match=reason):
        parse_ses(payload, "s")
