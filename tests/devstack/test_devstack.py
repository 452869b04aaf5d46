"""The local stack: topology, mailbox simulator, SNS signing, SMTP sink, CLI behaviour."""

from __future__ import annotations

import base64
import json
import os
import re
import smtplib
import socket
import subprocess
import sys
import time
import uuid
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from devstack import mailbox_simulator as sim
from devstack.env import check_env, stack_env
from devstack.sns_signer import (
    confirmation_envelope,
    generate_signing_identity,
    notification_envelope,
    sign_envelope,
)
from devstack.stack import PortInUseError, aws_client, config_from_env, down, is_running, status, up
from devstack.state import REPO_ROOT, StackState
from devstack.topology import QUEUES, describe_topology, ensure_topology
from pipelines.common.sns.canonical import string_to_sign
from pipelines.settings import SETTINGS

pytestmark = pytest.mark.long   # make dev started and stopped

SIM = "simulator.amazonses.com"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def verify(envelope: dict, cert_dir) -> None:
    """Independent of devstack.sns_signer: the cert named by SigningCertURL, looked up in cert_dir."""
    pem = (cert_dir / envelope["SigningCertURL"].rsplit("/", 1)[1]).read_bytes()
    algo = {"1": hashes.SHA1(), "2": hashes.SHA256()}[envelope["SignatureVersion"]]
    x509.load_pem_x509_certificate(pem).public_key().verify(
        base64.b64decode(envelope["Signature"]), string_to_sign(envelope), padding.PKCS1v15(), algo)


def raw_email(to: str, subject: str = "Reset your password") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Mailroom <noreply@mailroom.test>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4()}@mailroom.test>"
    msg.set_content("hello")
    return msg.as_bytes(policy=policy.SMTP)


def ses_send(local_stack, to: str) -> str:
    return local_stack.client("sesv2").send_email(
        FromEmailAddress="noreply@mailroom.test", Destination={"ToAddresses": [to]},
        Content={"Raw": {"Data": raw_email(to)}}, ConfigurationSetName="mailroom")["MessageId"]


# --- topology --------------------------------------------------------------------------------

def test_topology_twice_gives_identical_queues_subscriptions_and_redrive(local_stack):
    before = describe_topology(local_stack.client)
    first = ensure_topology(local_stack.client)
    second = ensure_topology(local_stack.client)
    after = describe_topology(local_stack.client)
    assert first == second
    assert before == after

    # The session's moto is shared: other tests make queues of their own (kit-*, compare-*, ...).
    queues = {name: q for name, q in after["queues"].items() if name.removesuffix("-dlq") in QUEUES}
    assert set(queues) == {"email-requests", "ses-notifications", "stripe-events",
                           "email-requests-dlq", "ses-notifications-dlq", "stripe-events-dlq"}
    for name in ("email-requests", "ses-notifications", "stripe-events"):
        redrive = json.loads(queues[name]["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == queues[f"{name}-dlq"]["QueueArn"]
        assert int(redrive["maxReceiveCount"]) == 5
        assert "RedrivePolicy" not in queues[f"{name}-dlq"]
    [sub] = after["subscriptions"]
    assert sub["TopicArn"] == local_stack.topic_arn
    assert sub["Protocol"] == "sqs"
    assert sub["Endpoint"] == queues["ses-notifications"]["QueueArn"]
    assert sub["RawMessageDelivery"] == "false"
    assert after["identities"] == ["mailroom.test", "noreply@mailroom.test"]
    assert after["configuration_sets"] == ["mailroom"]


# --- mailbox simulator, end to end -----------------------------------------------------------

def _message(envelope: dict) -> dict:
    assert isinstance(envelope["Message"], str)
    return json.loads(envelope["Message"])


def test_bounce_address_yields_signed_permanent_bounce_with_the_sent_message_id(stack_env, local_stack):
    to = f"bounce@{SIM}"
    message_id = ses_send(local_stack, to)
    [envelope] = local_stack.notifications_for(message_id, 1)

    assert envelope["Type"] == "Notification"
    assert envelope["TopicArn"] == local_stack.topic_arn
    assert envelope["SignatureVersion"] == "2"
    assert "Subject" not in envelope
    assert TIMESTAMP.match(envelope["Timestamp"])
    assert uuid.UUID(envelope["MessageId"])
    assert re.fullmatch(r"https://sns\.us-east-1\.amazonaws\.com/SimpleNotificationService-[0-9a-f]{32}\.pem",
                        envelope["SigningCertURL"])
    assert envelope["UnsubscribeURL"].startswith("https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe")
    verify(envelope, local_stack.cert_dir)

    msg = _message(envelope)
    assert msg["notificationType"] == "Bounce"
    assert msg["bounce"]["bounceType"] == "Permanent"
    assert msg["bounce"]["bounceSubType"] == "General"
    assert msg["bounce"]["bouncedRecipients"] == [{
        "emailAddress": to, "action": "failed", "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]
    mail = msg["mail"]
    assert mail["messageId"] == message_id
    assert mail["source"] == "noreply@mailroom.test"
    assert mail["destination"] == [to]
    assert mail["sourceArn"] == "arn:aws:ses:us-east-1:123456789012:identity/mailroom.test"
    assert mail["commonHeaders"]["subject"] == "Reset your password"
    assert mail["commonHeaders"]["to"] == [to]
    assert {"name": "Subject", "value": "Reset your password"} in mail["headers"]


def test_tampered_envelope_does_not_verify(stack_env, local_stack):
    message_id = ses_send(local_stack, f"bounce@{SIM}")
    [envelope] = local_stack.notifications_for(message_id, 1)
    forged = dict(envelope, Message=envelope["Message"].replace("Permanent", "Transient"))
    with pytest.raises(InvalidSignature):
        verify(forged, local_stack.cert_dir)


def test_complaint_address_yields_delivery_then_complaint(stack_env, local_stack):
    to = f"complaint@{SIM}"
    message_id = ses_send(local_stack, to)
    envelopes = local_stack.notifications_for(message_id, 2)
    kinds = sorted(_message(e)["notificationType"] for e in envelopes)
    assert kinds == ["Complaint", "Delivery"]
    complaint = next(_message(e) for e in envelopes if _message(e)["notificationType"] == "Complaint")
    assert complaint["complaint"]["complainedRecipients"] == [{"emailAddress": to}]
    assert complaint["complaint"]["complaintFeedbackType"] == "abuse"
    for e in envelopes:
        verify(e, local_stack.cert_dir)


def test_other_address_yields_one_delivery(stack_env, local_stack):
    to = "someone@example.org"
    message_id = ses_send(local_stack, to)
    envelopes = local_stack.notifications_for(message_id, 1)
    assert local_stack.notifications_for(message_id, 1, timeout=1.5) == []  # and nothing more
    assert len(envelopes) == 1
    msg = _message(envelopes[0])
    assert msg["notificationType"] == "Delivery"
    assert msg["delivery"]["recipients"] == [to]
    assert msg["mail"]["messageId"] == message_id
    verify(envelopes[0], local_stack.cert_dir)


@pytest.mark.parametrize("local,expected", [
    ("soft-bounce", [("Bounce", "Transient", "General")]),
    ("ooto", [("Delivery", None, None), ("Bounce", "Transient", "General")]),
    ("suppressed", [("Bounce", "Permanent", "Suppressed")]),
    ("suppressionlist", [("Bounce", "Permanent", "Suppressed")]),
])
def test_other_simulator_addresses(stack_env, local_stack, local, expected):
    message_id = ses_send(local_stack, f"{local}@{SIM}")
    envelopes = local_stack.notifications_for(message_id, len(expected))
    assert local_stack.notifications_for(message_id, 1, timeout=1.5) == []
    got = sorted((m["notificationType"], m.get("bounce", {}).get("bounceType"), m.get("bounce", {}).get("bounceSubType"))
                 for m in map(_message, envelopes))
    assert got == sorted(expected, key=lambda t: (t[0], t[1] or "", t[2] or ""))


def test_simple_send_and_several_recipients_each_get_notifications(stack_env, local_stack):
    tos = [f"bounce@{SIM}", "a@example.org"]
    message_id = local_stack.client("sesv2").send_email(
        FromEmailAddress="noreply@mailroom.test", Destination={"ToAddresses": tos},
        Content={"Simple": {"Subject": {"Data": "hi"}, "Body": {"Text": {"Data": "b"}}}})["MessageId"]
    envelopes = local_stack.notifications_for(message_id, 2)
    by_type = {_message(e)["notificationType"]: _message(e) for e in envelopes}
    assert set(by_type) == {"Bounce", "Delivery"}
    assert by_type["Bounce"]["bounce"]["bouncedRecipients"][0]["emailAddress"] == tos[0]
    assert by_type["Delivery"]["delivery"]["recipients"] == [tos[1]]
    assert by_type["Delivery"]["mail"]["destination"] == tos


def test_signature_version_1_is_configurable(local_stack, tmp_path):
    identity = generate_signing_identity()
    notification = sim.notifications_for(sim.SentMessage("m-1", "noreply@mailroom.test", [f"bounce@{SIM}"],
                                                         raw_email(f"bounce@{SIM}").decode()))[0]
    env = notification_envelope(identity, local_stack.topic_arn, json.dumps(notification), version="1")
    (tmp_path / identity.cert_name).write_bytes(identity.cert_pem)
    assert env["SignatureVersion"] == "1"
    verify(env, tmp_path)
    with pytest.raises(InvalidSignature):
        verify(dict(env, SignatureVersion="2"), tmp_path)


# --- pure parts of the simulator and signer ---------------------------------------------------

def test_envelope_recipients_are_taken_apart_from_header_recipients():
    raw = "From: noreply@mailroom.test\r\nTo: Header Person <h@example.org>\r\nSubject: s\r\n\r\nb\r\n"
    # moto appends the header recipients to the Destination ones
    assert sim.recipients_of(["e@example.org", "Header Person <h@example.org>"], raw) == ["e@example.org"]
    assert sim.recipients_of(["h@example.org", "Header Person <h@example.org>"], raw) == ["h@example.org"]
    assert sim.recipients_of(["Header Person <h@example.org>"], raw) == ["h@example.org"]


def test_outcome_table():
    assert sim.outcome(f"bounce@{SIM}") == ("bounce-permanent",)
    assert sim.outcome(f"Bounce+t1@{SIM.upper()}") == ("bounce-permanent",)
    assert sim.outcome(f"complaint@{SIM}") == ("delivery", "complaint")
    assert sim.outcome("bounce@example.org") == ("delivery",)
    assert sim.outcome(f"success@{SIM}") == ("delivery",)


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("kind", ["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"])
def test_signer_makes_verifiable_envelopes_of_every_type(tmp_path, version, kind):
    identity = generate_signing_identity()
    (tmp_path / identity.cert_name).write_bytes(identity.cert_pem)
    topic = "arn:aws:sns:us-east-1:123456789012:ses-notifications"
    if kind == "Notification":
        env = notification_envelope(identity, topic, '{"notificationType":"Delivery"}', version=version,
                                    subject="with subject")
    else:
        env = confirmation_envelope(identity, topic, unsubscribe=kind == "UnsubscribeConfirmation", version=version)
    assert env["Type"] == kind
    verify(env, tmp_path)
    resigned = sign_envelope({k: v for k, v in env.items() if k != "Signature"}, identity.key, version)
    assert resigned["Signature"] == env["Signature"]  # PKCS#1 v1.5 is deterministic
    with pytest.raises(InvalidSignature):
        verify(dict(env, TopicArn=topic + "-other"), tmp_path)


# --- SMTP sink ---------------------------------------------------------------------------------

def test_smtp_sink_stores_every_message_with_its_envelope(stack_env, local_stack):
    raw = raw_email("alice@example.org")
    with smtplib.SMTP(local_stack.smtp_host, local_stack.smtp_port) as smtp:
        smtp.sendmail("noreply@mailroom.test", ["alice@example.org", "bob@example.org"], raw)
        smtp.sendmail("noreply@mailroom.test", ["carol@example.org"], raw_email("carol@example.org"))
    messages = local_stack.smtp.wait_for(2)
    assert len(messages) == 2
    first = messages[0]
    assert first.mail_from == "noreply@mailroom.test"
    assert first.rcpt_tos == ["alice@example.org", "bob@example.org"]
    assert first.raw == raw
    assert first.message()["Subject"] == "Reset your password"
    assert [m.rcpt_tos for m in local_stack.smtp.to("carol@example.org")] == [["carol@example.org"]]
    assert len(list(local_stack.smtp.directory.glob("*.eml"))) == 2
    local_stack.smtp.clear()
    assert local_stack.smtp.messages() == []


@pytest.mark.parametrize("body", [
    b".\r\n..\r\n.hidden line\r\nends with a dot.\r\n. \r\nx.\r\n.\r\n",  # dot-stuffing both ways
    b"",
    b"".join(b"line %d of a long message, ending in a period.\r\n" % i for i in range(80_000)),  # ~3.8 MB
    bytes(range(1, 256)).replace(b"\r", b"").replace(b"\n", b"") + b"\r\n",  # 8-bit
])
def test_smtp_sink_stores_bodies_byte_for_byte(stack_env, local_stack, body):
    raw = b"From: noreply@mailroom.test\r\nTo: a@example.org\r\nSubject: edge\r\n\r\n" + body
    with smtplib.SMTP(local_stack.smtp_host, local_stack.smtp_port) as smtp:
        smtp.sendmail("noreply@mailroom.test", ["a@example.org"], raw)
    [stored] = local_stack.smtp.wait_for(1)
    assert stored.raw == raw


def test_smtp_sink_answers_a_command_sent_right_behind_the_data(stack_env, local_stack):
    conn = socket.create_connection((local_stack.smtp_host, local_stack.smtp_port), timeout=5)
    reader = conn.makefile("rb")
    assert reader.readline().startswith(b"220")
    for command, code in ((b"HELO t", b"250"), (b"MAIL FROM:<n@mailroom.test>", b"250"),
                          (b"RCPT TO:<a@example.org>", b"250"), (b"DATA", b"354")):
        conn.sendall(command + b"\r\n")
        assert reader.readline().startswith(code)
    conn.sendall(b"Subject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n")  # end of data and QUIT in one packet
    assert reader.readline().startswith(b"250")
    assert reader.readline().startswith(b"221")
    conn.close()
    assert [m.raw for m in local_stack.smtp.wait_for(1)] == [b"Subject: s\r\n\r\nbody\r\n"]


def _dialogue(port: int, commands: list[bytes]) -> list[bytes]:
    """Each reply's first line, after EHLO."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    reader = conn.makefile("rb")
    replies = [reader.readline()[:3]]
    conn.sendall(b"EHLO t\r\n")
    while reader.readline().startswith(b"250-"):
        pass
    for command in commands:
        conn.sendall(command + b"\r\n")
        replies.append(reader.readline()[:3])
    conn.close()
    return replies


PATHS = [
    b"<plain.user+tag@example.org>", b"<UPPER@Example.ORG>", b"<plain@example.org> NOTIFY=NEVER",
    b'<"quoted local"@example.org>', b"<a@@example.org>", b"<>", b"plain@example.org", b"<a@b> SIZE=abc",
    b"<@route.example:user@example.org>", b"<" + b"x" * 70 + b"@example.org>", b"<a b@example.org>",
    b"<.a@example.org>", b"<a..b@example.org>", b"<a@-x.example>", b"<a@b..c>", b"<a@b.>",
]


@pytest.mark.parametrize("path", PATHS)
def test_smtp_sink_answers_mail_and_rcpt_exactly_as_aiosmtpd(stack_env, local_stack, tmp_path, path):
    from aiosmtpd.controller import Controller

    from devstack.smtp_sink import SinkHandler, SinkReader

    from devstack.stack import free_port

    port = free_port()
    vanilla = Controller(SinkHandler(tmp_path / "vanilla"), hostname="127.0.0.1", port=port)
    vanilla.start()
    try:
        for commands in ([b"MAIL FROM:<> SIZE=100", b"RCPT TO:" + path, b"DATA"],
                         [b"MAIL FROM:" + path, b"RCPT TO:<x@example.org>"]):
            assert _dialogue(local_stack.smtp_port, commands) == _dialogue(port, commands), commands
    finally:
        vanilla.stop()
    stored = [m.rcpt_tos for m in local_stack.smtp.messages()]
    assert stored == [m.rcpt_tos for m in SinkReader(tmp_path / "vanilla").messages()] == []


def test_smtp_sink_latency_holds_each_send_and_connections_wait_together(tmp_path):
    import threading

    from devstack.smtp_sink import SinkReader, SmtpSink
    from devstack.stack import free_port

    sink = SmtpSink(tmp_path / "slow", free_port(), latency=0.2)
    sink.start()
    took: list[float] = []

    def send(i: int) -> None:
        with smtplib.SMTP("127.0.0.1", sink.controller.port) as smtp:
            began = time.monotonic()
            smtp.sendmail("noreply@mailroom.test", [f"slow{i}@example.org"], raw_email(f"slow{i}@example.org"))
            took.append(time.monotonic() - began)

    try:
        began = time.monotonic()
        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - began
    finally:
        sink.stop()
    assert len(took) == 4 and min(took) >= 0.2
    assert wall < 0.2 * 4 - 0.1, wall      # the four connections waited at the same time
    assert sorted(r for m in SinkReader(tmp_path / "slow").messages() for r in m.rcpt_tos) == [
        f"slow{i}@example.org" for i in range(4)]


def _try(smtp: smtplib.SMTP, to: str) -> int:
    try:
        smtp.sendmail("noreply@mailroom.test", [to], raw_email(to))
    except smtplib.SMTPRecipientsRefused as exc:
        return exc.recipients[to][0]
    return 250


def test_smtp_fault_injection_fails_the_first_n_attempts_then_accepts(stack_env, local_stack):
    to = f"smtp-451-2+{uuid.uuid4().hex[:8]}@example.org"
    codes = []
    for _ in range(4):
        with smtplib.SMTP(local_stack.smtp_host, local_stack.smtp_port) as smtp:
            codes.append(_try(smtp, to))
    assert codes == [451, 451, 250, 250]
    assert len(local_stack.smtp.to(to)) == 2


def test_smtp_550_always_fails_and_keeps_nothing(stack_env, local_stack):
    with smtplib.SMTP(local_stack.smtp_host, local_stack.smtp_port) as smtp:
        assert [_try(smtp, "smtp-550@example.org") for _ in range(3)] == [550, 550, 550]
        assert _try(smtp, "fine@example.org") == 250  # the connection is still usable
    assert [m.rcpt_tos for m in local_stack.smtp.wait_for(1)] == [["fine@example.org"]]


def test_smtp_421_closes_the_connection_then_accepts(stack_env, local_stack):
    to = f"smtp-421-1+{uuid.uuid4().hex[:8]}@example.org"
    conn = socket.create_connection((local_stack.smtp_host, local_stack.smtp_port), timeout=5)
    reader = conn.makefile("rb")
    assert reader.readline().startswith(b"220")
    for command, code in ((b"HELO t", b"250"), (b"MAIL FROM:<noreply@mailroom.test>", b"250"),
                          (f"RCPT TO:<{to}>".encode(), b"421")):
        conn.sendall(command + b"\r\n")
        assert reader.readline().startswith(code)
    assert reader.readline() == b""  # the server hung up
    conn.close()
    with smtplib.SMTP(local_stack.smtp_host, local_stack.smtp_port) as smtp:
        assert _try(smtp, to) == 250


# --- stack lifecycle and CLI --------------------------------------------------------------------

def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devstack", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTACK_")}
    env.update(extra)
    return env


@pytest.mark.integration
def test_up_twice_is_harmless_and_down_stops_everything(tmp_path):
    env = _base_env(DEVSTACK_STATE_DIR=str(tmp_path / "st"), DEVSTACK_MOTO_PORT="0", DEVSTACK_SMTP_PORT="0",
                    DEVSTACK_STRIPE_PORT="0", DEVSTACK_MAIL_PORT="0")
    first = _cli("up", env=env)
    assert first.returncode == 0, first.stderr
    assert "started in" in first.stdout
    state = StackState.load(tmp_path / "st")
    try:
        second = _cli("up", env=env)
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stdout
        again = StackState.load(tmp_path / "st")
        assert (again.moto_pid, again.services_pid, again.moto_port, again.smtp_port) == (
            state.moto_pid, state.services_pid, state.moto_port, state.smtp_port)
        assert is_running(again)
        shown = _cli("status", env=env)
        assert shown.returncode == 0 and json.loads(shown.stdout)["running"] is True
        exported = _cli("env", env=env).stdout
        assert f"export SMTP_PORT={state.smtp_port}\n" in exported
        assert f"export AWS_ENDPOINT_URL=http://127.0.0.1:{state.moto_port}\n" in exported
        plain = _cli("env", env={k: v for k, v in env.items() if k != "EMAIL_TRANSPORT"}).stdout
        assert "export EMAIL_TRANSPORT=ses\n" in plain      # what `make dev` sends through
        smtp = _cli("env", env={**env, "EMAIL_TRANSPORT": "smtp"}).stdout
        assert "export EMAIL_TRANSPORT=smtp\n" in smtp      # the same override as `make dev`
    finally:
        assert _cli("down", env=env).returncode == 0
    assert not is_running(state)
    for pid in (state.moto_pid, state.services_pid, state.stripe_pid):
        assert not os.path.exists(f"/proc/{pid}") or b"devstack" not in open(f"/proc/{pid}/cmdline", "rb").read()
    assert _cli("status", env=env).returncode == 3


@pytest.mark.integration
def test_port_in_use_names_the_port_and_how_to_choose_another(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = _base_env(DEVSTACK_STATE_DIR=str(tmp_path / "st"), DEVSTACK_MOTO_PORT="0",
                        DEVSTACK_SMTP_PORT=str(port))
        result = _cli("up", env=env)
        assert result.returncode == 2
        assert f"port {port}" in result.stderr
        assert "DEVSTACK_SMTP_PORT" in result.stderr
        with pytest.raises(PortInUseError, match=f"port {port} .*DEVSTACK_MOTO_PORT"):
            up(config_from_env({"DEVSTACK_MOTO_PORT": str(port)}, state_dir=tmp_path / "st2"))
    assert StackState.load(tmp_path / "st") is None
    assert status(tmp_path / "st")["running"] is False
    assert down(tmp_path / "st") is False


def test_up_on_the_running_session_stack_reports_it(local_stack):
    state, already = up(config_from_env({}, state_dir=local_stack.state.state_dir))
    assert already
    assert (state.moto_pid, state.smtp_port) == (local_stack.state.moto_pid, local_stack.smtp_port)


def test_stack_env_covers_every_setting_and_passes_check(local_stack):
    env = stack_env(local_stack.state)
    assert {s.name for s in SETTINGS} <= set(env)
    assert {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
            "DAGSTER_HOME", "SNS_CERT_DIR"} <= set(env)
    assert env["SNS_TOPIC_ALLOWLIST"] == local_stack.topic_arn
    assert check_env(env) == []


@pytest.mark.parametrize("change,name", [
    ({"SMTP_PORT": None}, "SMTP_PORT"),
    ({"EMAIL_TRANSPORT": "carrier-pigeon"}, "EMAIL_TRANSPORT"),
    ({"SMTP_PORT": "twenty-five"}, "SMTP_PORT"),
    ({"SNS_TOPIC_ALLOWLIST": None}, "SNS_TOPIC_ALLOWLIST"),
])
def test_check_fails_naming_the_variable(local_stack, change, name):
    env = _base_env(**local_stack.env)
    for k, v in change.items():
        if v is None:
            env.pop(k)
        else:
            env[k] = v
    result = _cli("check", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith(name), result.stderr
    assert _cli("check", env=_base_env(**local_stack.env)).returncode == 0


def test_check_never_echoes_a_secret(local_stack):
    env = _base_env(**{**local_stack.env, "STRIPE_API_KEY": "   "})
    result = _cli("check", env=env)
    assert result.returncode == 1
    assert "STRIPE_API_KEY" in result.stderr
    assert "'   '" not in result.stderr


def test_notifications_arrive_within_two_seconds(stack_env, local_stack):
    start = time.monotonic()
    message_id = ses_send(local_stack, f"bounce@{SIM}")
    assert local_stack.notifications_for(message_id, 1, timeout=5)
    assert time.monotonic() - start < 2.0


# --- make dev ----------------------------------------------------------------------------------

def test_demo_requests_are_valid_dispatcher_requests():
    import random

    from devstack.demo import demo_request
    from pipelines.email.request import parse_request

    rng = random.Random(7)
    requests = [demo_request(rng) for _ in range(200)]
    parsed = [parse_request(json.dumps(r)) for r in requests]
    assert {p.kind for p in parsed} == {"password-reset", "verify-email", "new-email-added", "two-factor-added"}
    locals_ = {r["recipients"][0]["email"].split("+")[0] for r in requests}
    # a healthy platform's mix: no hard bounce, no complaint (incidents send those on purpose)
    assert locals_ == {"success", "ooto", "soft-bounce"}
    assert len({r["request_id"] for r in requests}) == 200


def _start_dev(tmp_path, demo_interval: str) -> tuple[subprocess.Popen, Path]:
    """`python -m devstack dev` on free ports with its own DAGSTER_HOME; returns (process, home)."""
    import shutil

    from devstack.env import DAGSTER_HOME

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DAGSTER_HOME / "dagster.yaml", home / "dagster.yaml")
    env = _base_env(DEVSTACK_STATE_DIR=str(tmp_path / "st"), DEVSTACK_MOTO_PORT="0", DEVSTACK_SMTP_PORT="0",
                    DEVSTACK_STRIPE_PORT="0", DEVSTACK_MAIL_PORT="0", DEVSTACK_DAGSTER_PORT="0", DEVSTACK_DAGSTER_HOME=str(home), DEVSTACK_DEMO_INTERVAL=demo_interval)
    proc = subprocess.Popen([sys.executable, "-m", "devstack", "dev"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, home


@pytest.mark.integration
def test_dev_serves_the_code_location_and_ctrl_c_stops_everything(tmp_path):
    import signal
    import urllib.request

    proc, _ = _start_dev(tmp_path, demo_interval="2")
    try:
        port = None
        printed = []
        deadline = time.monotonic() + 180
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            printed.append(line)
            assert line or proc.poll() is None, "devstack dev exited early"
            m = re.search(r"^UI at http://127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        assert port, "the UI did not come up within 180 s"
        assert any(re.match(r"mail viewer at http://127\.0\.0\.1:\d+", line) for line in printed), printed
        query = {"query": "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus"
                          " locationOrLoadError { __typename ... on PythonError { message } } } } } }"}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps(query).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            [entry] = json.load(resp)["data"]["workspaceOrError"]["locationEntries"]
        assert entry["name"] == "mailroom"
        assert entry["loadStatus"] == "LOADED"
        assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
        state = StackState.load(tmp_path / "st")
        assert is_running(state)
        sqs = aws_client(state.endpoint, "sqs")
        queued = 0
        deadline = time.monotonic() + 10
        while not queued and time.monotonic() < deadline:  # demo traffic arrives
            attrs = sqs.get_queue_attributes(QueueUrl=state.queue_urls["email-requests"],
                                             AttributeNames=["ApproximateNumberOfMessages",
                                                             "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
            queued = sum(int(v) for v in attrs.values())
            time.sleep(0.2)
        assert queued
        # and, once, the demo billing set: organisations, and subscriptions in the local Stripe
        billing = ""
        deadline = time.monotonic() + 120
        while "demo billing" not in billing and time.monotonic() < deadline:
            billing = proc.stdout.readline()
            assert billing or proc.poll() is None, "devstack dev exited early"
        # the healthy demo set: the two leaking organisations come only with `devstack incident leak`
        assert billing.startswith("demo billing: 6 organisations, 3 subscriptions in the local Stripe"), billing
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert not is_running(state)
        assert StackState.load(tmp_path / "st") is None
        with pytest.raises(ConnectionRefusedError):  # nothing serves the UI any more
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()  # dagster dev follows (parent-death signal)
                proc.wait()
        down(tmp_path / "st")


@pytest.mark.integration
def test_dagster_stops_when_dev_is_killed(tmp_path):
    import signal

    proc, home = _start_dev(tmp_path, demo_interval="0")

    def dagster_processes() -> list[str]:  # everything running with this test's DAGSTER_HOME
        return subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True).stdout.split()

    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "devstack dev exited early"
            if line.startswith("UI at "):
                break
        assert dagster_processes(), "no webserver/daemon seen"
        state = StackState.load(tmp_path / "st")
        proc.send_signal(signal.SIGKILL)  # no cleanup code of `devstack dev` runs
        proc.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (dagster_processes() or is_running(state)):
            time.sleep(0.5)
        assert dagster_processes() == [], "dagster outlived devstack dev"
        assert not is_running(state)
    finally:
        if proc.poll() is None:
            proc.kill()
        down(tmp_path / "st")


# --- moto's data.json, filtered -----------------------------------------------------------------

def _data_json(endpoint: str, query: str = "") -> dict:
    import urllib.request

    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json{query}", timeout=30) as resp:
        return json.load(resp)


def test_data_json_filters_by_service_and_offset(stack_env, local_stack):
    before = _data_json(local_stack.endpoint, "?service=ses")
    assert set(before) == {"ses"}
    n = before["ses"]["_counts"]["RawMessage"]
    assert len(before["ses"]["RawMessage"]) == n
    message_id = ses_send(local_stack, "someone@example.org")
    after = _data_json(local_stack.endpoint, f"?service=ses&offset_RawMessage={n}")
    assert [m["id"] for m in after["ses"]["RawMessage"]] == [message_id]
    assert after["ses"]["_counts"]["RawMessage"] == n + 1
    full = _data_json(local_stack.endpoint)  # no parameters: moto's own dump
    assert {"ses", "sqs", "sns"} <= set(full)
    assert "_counts" not in full["ses"]
    assert message_id in [m["id"] for m in full["ses"]["RawMessage"]]


def _answers(endpoint: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True     # any HTTP answer: the server is up
    except OSError:
        return False


@pytest.mark.integration
def test_simulator_also_works_against_plain_moto(tmp_path):
    from devstack.mailbox_simulator import MailboxSimulator
    from devstack.stack import client_factory, free_port
    from tests.waiting import wait_until

    port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(endpoint), timeout=30, what=f"plain moto answering on port {port}")
        clients = client_factory(endpoint)
        topology = ensure_topology(clients)
        identity = generate_signing_identity()
        simulator = MailboxSimulator(endpoint, clients, topology.queue_urls["ses-notifications"], topology.topic_arn,
                                     identity, tmp_path / "answered.txt")
        message_id = clients("sesv2").send_email(
            FromEmailAddress="noreply@mailroom.test", Destination={"ToAddresses": [f"bounce@{SIM}"]},
            Content={"Raw": {"Data": raw_email(f"bounce@{SIM}")}})["MessageId"]
        assert simulator.poll_once() == 1
        assert simulator.poll_once() == 0  # answered once only
        assert simulator.offsets == {}  # full dumps: no offsets
        [m] = clients("sqs").receive_message(QueueUrl=topology.queue_urls["ses-notifications"]).get("Messages")
        assert json.loads(json.loads(m["Body"])["Message"])["mail"]["messageId"] == message_id
    finally:
        moto.kill()
        moto.wait()


# --- moto's SQS SendMessage, patched --------------------------------------------------------------

def test_fifo_deduplication_still_works(local_stack):
    sqs = local_stack.client("sqs")
    url = sqs.create_queue(QueueName=f"t-{uuid.uuid4().hex[:8]}.fifo",
                           Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    try:
        for _ in range(2):
            sqs.send_message(QueueUrl=url, MessageBody="same body", MessageGroupId="g")
        sqs.send_message(QueueUrl=url, MessageBody="other body", MessageGroupId="g")
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attrs["ApproximateNumberOfMessages"] == "2"
        assert attrs["ContentBasedDeduplication"] == "true"
        assert attrs["FifoQueue"] == "true"
    finally:
        sqs.delete_queue(QueueUrl=url)


def test_sqs_send_does_not_slow_down_as_the_queue_fills(local_stack):
    sqs = local_stack.client("sqs")
    url = sqs.create_queue(QueueName=f"t-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    batch = [{"Id": str(j), "MessageBody": "x" * 1000} for j in range(10)]

    def timed(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            sqs.send_message_batch(QueueUrl=url, Entries=batch)
        return time.perf_counter() - start

    try:
        empty = timed(30)
        timed(500)  # 5,000 deep; stock moto 5.2.5 scans every message three times per send
        deep = timed(30)
        assert deep < 3 * empty + 0.5, (empty, deep)
        depth = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        assert depth["Attributes"]["ApproximateNumberOfMessages"] == "5600"
    finally:
        sqs.delete_queue(QueueUrl=url)
