"""The mail viewer (devstack/mail_viewer.py) on the local stack: mail sent through SES (moto, copied
by the mailbox simulator) and through the SMTP sink, each readable with its recipient, headers,
text and HTML; the HTML is served sandboxed. The incidents' Stripe poison is refused by the real
ingestion and the silent edit changes Stripe without an event."""

from __future__ import annotations

import json
import smtplib
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import quote

import pytest

from devstack.incidents import poison_events
from pipelines.email.builder import Builder
from pipelines.email.dispatch import build_request

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _wait_for(base: str, address: str, n: int = 1, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = json.loads(_get(f"{base}/api/messages?q={quote(address)}")[2])
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _built(address: str):
    request = build_request("password-reset", [{"email": address, "name": "Ada", "username": "ada",
                                                "verified": True}], {"n_hours": 6, "token": "t0k", "username": "ada"})
    return Builder().build(request, request.recipients[0], "noreply@mailroom.test")


def test_ses_and_smtp_mail_are_both_readable(stack_env, local_stack):
    base = local_stack.state.mail_url
    ses_to, smtp_to = f"ses+{uuid.uuid4().hex[:8]}@example.org", f"smtp+{uuid.uuid4().hex[:8]}@example.org"
    ses_mail = _built(ses_to)
    local_stack.client("sesv2").send_email(FromEmailAddress="noreply@mailroom.test",
                                           Destination={"ToAddresses": [ses_to]},
                                           Content={"Raw": {"Data": ses_mail.raw}})
    with smtplib.SMTP("127.0.0.1", local_stack.state.smtp_port) as smtp:
        smtp.sendmail("noreply@mailroom.test", [smtp_to], _built(smtp_to).raw)

    for address, transport, built in ((ses_to, "ses", ses_mail), (smtp_to, "smtp", None)):
        [summary] = _wait_for(base, address)
        assert summary["transport"] == transport and summary["recipients"] == [address]
        assert summary["subject"] == "[Mailroom] Password reset for ada" and summary["kind"] == "password-reset"
        if built:
            assert summary["message_id"] == f"<{built.message_id}>" and summary["ses_message_id"]
        status, _, body = _get(f"{base}/api/messages/{summary['id']}")
        detail = json.loads(body)
        assert status == 200 and "Someone asked to reset the password" in detail["text"]
        assert "Someone asked to reset the password" in detail["html"]
        assert ["X-Mailroom-Kind", "password-reset"] in detail["headers"]
        status, headers, page = _get(f"{base}/messages/{summary['id']}")
        assert status == 200 and address.encode() in page and b"Message-ID" in page and b"List-Unsubscribe" in page
        status, headers, html = _get(f"{base}/messages/{summary['id']}/html")
        assert status == 200 and headers["Content-Security-Policy"].startswith("sandbox")
        status, _, raw = _get(f"{base}/messages/{summary['id']}/raw")
        assert raw.startswith(b"From: ")
    status, _, listing = _get(f"{base}/")
    assert status == 200 and ses_to.encode() in listing and smtp_to.encode() in listing


def test_a_simple_ses_send_and_unknown_ids(stack_env, local_stack):
    base = local_stack.state.mail_url
    to = f"simple+{uuid.uuid4().hex[:8]}@example.org"
    local_stack.client("sesv2").send_email(
        FromEmailAddress="noreply@mailroom.test", Destination={"ToAddresses": [to]},
        Content={"Simple": {"Subject": {"Data": "plain hello"}, "Body": {"Text": {"Data": "just text"}}}})
    [summary] = _wait_for(base, to)
    assert summary["subject"] == "plain hello"
    for path in ("/messages/ses-nope", "/messages/../../etc/passwd", "/api/messages/x-1", "/nothing"):
        assert _get(base + path)[0] == 404, path
    assert _get(base + "/?limit=x")[0] == 400


def test_poison_events_are_quarantined_by_the_ingestion():
    from pipelines.billing.envelope import EnvelopeSettings
    from pipelines.billing.ingest import IngestSettings, StripeIngest
    from pipelines.common.queue_message import QueueMessage
    from resources.stripe_client import STRIPE_API_VERSION

    bodies = poison_events("acct_local", 3, STRIPE_API_VERSION)
    ingest = StripeIngest(IngestSettings(EnvelopeSettings(frozenset({"aws.partner/stripe.com/acct_local"}), None)))
    prepared = ingest.prepare([QueueMessage(sqs_message_id=f"m{i}", receipt_handle="r", body=b)
                               for i, b in enumerate(bodies)])
    assert len(prepared.quarantined) == 3
    assert all("subscription lacks customer" in q.reason for q in prepared.quarantined)
    assert len(prepared.events) == 3   # recorded in stripe_events as quarantined: the share check counts them


def test_the_silent_edit_changes_stripe_without_an_event(local_stack):
    local_stack.stripe_control("reset")
    client = local_stack.stripe_client()
    customer = client.v1.customers.create(params={"email": "silent@example.org"})
    events = len(local_stack.stripe_control("state/event", method="GET")["data"])
    edited = local_stack.stripe_control(f"objects/{customer['id']}", name="Changed quietly")
    assert edited["name"] == "Changed quietly"
    assert client.v1.customers.retrieve(customer["id"])["name"] == "Changed quietly"
    assert len(local_stack.stripe_control("state/event", method="GET")["data"]) == events


def test_the_viewer_port_is_claimed_when_set_and_falls_back_when_not(tmp_path, monkeypatch):
    import socket

    from devstack import stack

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(stack.PortInUseError, match=f"port {port} .*DEVSTACK_MAIL_PORT"):
            stack.up(stack.config_from_env({"DEVSTACK_MOTO_PORT": "0", "DEVSTACK_SMTP_PORT": "0",
                                            "DEVSTACK_STRIPE_PORT": "0", "DEVSTACK_MAIL_PORT": str(port)},
                                           state_dir=tmp_path / "st"))
        monkeypatch.setattr(stack, "MAIL_VIEWER_PORT", port)   # the default taken: another free port
        assert stack._mail_port(None) not in (port, 0)
    assert stack.StackState.load(tmp_path / "st") is None
    with pytest.raises(stack.StackError, match="DEVSTACK_MAIL_PORT must be a port number"):
        stack.config_from_env({"DEVSTACK_MAIL_PORT": "mail"})


def test_status_names_the_viewer(local_stack):
    from devstack.stack import status

    shown = status(local_stack.state.state_dir)
    assert shown["mail_viewer"]["url"] == local_stack.state.mail_url
    assert _get(local_stack.state.mail_url + "/")[0] == 200
