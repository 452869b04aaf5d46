"""Mailbox simulator: answers every message sent through moto's SES with the SES notifications
AWS would send (classic `notificationType` layout), each wrapped in a signed SNS envelope and
put on the ses-notifications queue exactly as SNS delivers it with raw delivery off.

The outcome follows the recipient, as at AWS's own mailbox simulator (so the same addresses
work against real SES), at the domain simulator.amazonses.com:
  bounce                      Bounce Permanent/General
  soft-bounce                 Bounce Transient/General
  complaint                   Delivery, then Complaint (abuse)
  ooto                        Delivery, then Bounce Transient/General (auto-reply, no DSN)
  suppressed, suppressionlist Bounce Permanent/Suppressed
  anything else, any domain   Delivery

moto 5.2.5 records SESv2 SendEmail with Content.Raw (and SES v1 SendRawEmail) under
data.json → ses → RawMessage {id, source, destinations, raw_data}; Content.Simple lands in
ses → Message {id, source, destinations{To,Cc,BccAddresses}, subject, body}. For raw sends moto
appends the To/Cc/Bcc header addresses to the envelope destinations, so recipients_of() takes
them back off. Plain data.json dumps every model moto ever created (every SQS message too);
the stack runs moto through devstack.moto_server, whose data.json takes ?service=ses and
per-model offsets, so each look returns only the sends not seen yet. The poller looks only when
SES GetSendQuota's sent counter has moved.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.parser import Parser
from email.policy import compat32
from email.utils import formataddr, getaddresses, parseaddr
from pathlib import Path
from typing import Any

from devstack.sns_signer import SigningIdentity, notification_envelope

log = logging.getLogger("devstack.mailbox_simulator")

SIMULATOR_DOMAIN = "simulator.amazonses.com"
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
SUPPRESSED_DIAGNOSTIC = (
    "Amazon SES has suppressed sending to this address because it has a recent history of bouncing as an "
    "invalid address. For more information about how to remove an address from the suppression list, see "
    "the Amazon SES Developer Guide: http://docs.aws.amazon.com/ses/latest/DeveloperGuide/"
    "remove-from-suppressionlist.html "
)


@dataclass(frozen=True)
class SentMessage:
    message_id: str
    source: str
    recipients: list[str]  # bare addresses, envelope order, no duplicates
    raw: str  # full MIME text ("" when unknown)
    subject: str = ""
    body: str = ""  # a simple (not raw) send's body


def outcome(recipient: str) -> tuple[str, ...]:
    """The notification types, in order, that this recipient produces."""
    local, _, domain = recipient.lower().partition("@")
    if domain != SIMULATOR_DOMAIN:
        return ("delivery",)
    local = local.split("+", 1)[0]
    return {
        "bounce": ("bounce-permanent",),
        "soft-bounce": ("bounce-transient",),
        "complaint": ("delivery", "complaint"),
        "ooto": ("delivery", "bounce-ooto"),
        "suppressed": ("bounce-suppressed",),
        "suppressionlist": ("bounce-suppressed",),
    }.get(local, ("delivery",))


def _header_recipients(raw: str) -> list[str]:
    msg = Parser(policy=compat32).parsestr(raw, headersonly=True)
    values = [msg[h] for h in ("TO", "CC", "BCC") if h in msg]
    return [formataddr((name, addr)) for name, addr in getaddresses(values) if addr]


def _unique_bare(addresses: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for a in addresses:
        bare = parseaddr(a)[1] or a
        seen.setdefault(bare, None)
    return list(seen)


def recipients_of(destinations: list[str], raw: str) -> list[str]:
    """The envelope recipients of a moto RawMessage (moto appends the header ones)."""
    from_headers = _header_recipients(raw)
    n_envelope = len(destinations) - len(from_headers)
    if n_envelope > 0 and destinations[n_envelope:] == from_headers:
        return _unique_bare(destinations[:n_envelope])
    return _unique_bare(destinations)  # no Destination given: SES sends to the header recipients


def sent_messages(data: dict) -> list[SentMessage]:
    """Every message in a moto data.json dump, raw and simple sends alike."""
    ses = data.get("ses") or {}
    out = [
        SentMessage(m["id"], m.get("source") or "", recipients_of(list(m.get("destinations") or []),
                                                                 m.get("raw_data") or ""), m.get("raw_data") or "")
        for m in ses.get("RawMessage", [])
    ]
    for m in ses.get("Message", []):
        dest = m.get("destinations") or {}
        addrs = dest.get("ToAddresses", []) + dest.get("CcAddresses", []) + dest.get("BccAddresses", [])
        out.append(SentMessage(m["id"], m.get("source") or "", _unique_bare(addrs), "", m.get("subject") or "",
                               str(m.get("body") or "")))
    return out


def _iso_ms(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # noqa: BLE001 - malformed encoded-words: keep them as sent
        return value


def _mail_object(sent: SentMessage, sent_at: dt.datetime, account_id: str, region: str) -> dict:
    source_addr = parseaddr(sent.source)[1] or sent.source
    domain = source_addr.rpartition("@")[2]
    if sent.raw:
        msg = Parser(policy=compat32).parsestr(sent.raw, headersonly=True)
        headers = [{"name": k, "value": " ".join(str(v).split())} for k, v in msg.items()]
    else:
        headers = [{"name": "From", "value": sent.source}, {"name": "To", "value": ", ".join(sent.recipients)},
                   {"name": "Subject", "value": sent.subject}]
    by_name: dict[str, str] = {}
    for h in headers:
        by_name.setdefault(h["name"].lower(), h["value"])
    common: dict[str, Any] = {}
    for key, name, is_list in (("from", "from", True), ("replyTo", "reply-to", True), ("date", "date", False),
                               ("to", "to", True), ("cc", "cc", True), ("messageId", "message-id", False),
                               ("subject", "subject", False)):
        if name in by_name:
            value = _decoded(by_name[name])
            common[key] = [value] if is_list else value
    return {
        "timestamp": _iso_ms(sent_at),
        "source": sent.source,
        "sourceArn": f"arn:aws:ses:{region}:{account_id}:identity/{domain}",
        "sourceIp": "127.0.0.1",
        "sendingAccountId": account_id,
        "messageId": sent.message_id,
        "destination": list(sent.recipients),
        "headersTruncated": False,
        "headers": headers,
        "commonHeaders": common,
    }


def _feedback_id(when: dt.datetime) -> str:
    return f"{int(when.timestamp() * 1000):016x}-{uuid.uuid4()}-000000"


def notification(kind: str, recipient: str, mail: dict, when: dt.datetime, region: str = REGION) -> dict:
    """One SES notification (the SNS Message) of the given simulated kind for one recipient."""
    stamp = _iso_ms(when)
    if kind == "delivery":
        return {"notificationType": "Delivery", "mail": mail, "delivery": {
            "timestamp": stamp, "processingTimeMillis": 412, "recipients": [recipient],
            "smtpResponse": "250 2.6.0 Message received", "remoteMtaIp": "127.0.0.1",
            "reportingMTA": f"a8-70.smtp-out.{region}.amazonses.com"}}
    if kind == "complaint":
        return {"notificationType": "Complaint", "complaint": {
            "feedbackId": _feedback_id(when), "complaintSubType": None,
            "complainedRecipients": [{"emailAddress": recipient}], "timestamp": stamp,
            "userAgent": "Amazon SES Mailbox Simulator", "complaintFeedbackType": "abuse", "arrivalDate": stamp},
            "mail": mail}
    bounce: dict[str, Any] = {"feedbackId": _feedback_id(when)}
    if kind == "bounce-permanent":
        bounce.update(bounceType="Permanent", bounceSubType="General", bouncedRecipients=[{
            "emailAddress": recipient, "action": "failed", "status": "5.1.1",
            "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
            timestamp=stamp, remoteMtaIp="127.0.0.1", reportingMTA=f"dns; a48-30.smtp-out.{region}.amazonses.com")
    elif kind == "bounce-transient":
        bounce.update(bounceType="Transient", bounceSubType="General", bouncedRecipients=[{
            "emailAddress": recipient, "action": "failed", "status": "4.4.7",
            "diagnosticCode": "smtp; 554 4.4.7 Message expired: unable to deliver in 840 minutes."
                              "<421 4.4.0 Unable to lookup DNS for simulator.amazonses.com>"}],
            timestamp=stamp, reportingMTA=f"dsn; a4-1.smtp-out.{region}.amazonses.com")
    elif kind == "bounce-ooto":
        # An auto-reply carries no DSN, so only emailAddress is present (as SES documents).
        bounce.update(bounceType="Transient", bounceSubType="General",
                      bouncedRecipients=[{"emailAddress": recipient}], timestamp=stamp,
                      reportingMTA=f"dns; a48-30.smtp-out.{region}.amazonses.com")
    elif kind == "bounce-suppressed":
        bounce.update(bounceType="Permanent", bounceSubType="Suppressed", bouncedRecipients=[{
            "emailAddress": recipient, "action": "failed", "status": "5.1.1",
            "diagnosticCode": SUPPRESSED_DIAGNOSTIC}], timestamp=stamp, reportingMTA="dns; amazonses.com")
    else:
        raise ValueError(f"unknown simulated outcome {kind!r}")
    return {"notificationType": "Bounce", "bounce": bounce, "mail": mail}


def notifications_for(sent: SentMessage, sent_at: dt.datetime | None = None, account_id: str = ACCOUNT_ID,
                      region: str = REGION) -> list[dict]:
    """Every SES notification a message produces, in the order SES would send them."""
    sent_at = sent_at or dt.datetime.now(dt.timezone.utc)
    mail = _mail_object(sent, sent_at, account_id, region)
    out = []
    for recipient in sent.recipients:
        for i, kind in enumerate(outcome(recipient)):
            out.append(notification(kind, recipient, mail, sent_at + dt.timedelta(milliseconds=400 + 600 * i),
                                    region))
    return out


class MailboxSimulator:
    """Polls moto and answers each new SES message once (ids remembered in answered_file)."""

    def __init__(self, endpoint: str, client: Callable[[str], Any], queue_url: str, topic_arn: str,
                 identity: SigningIdentity, answered_file: Path, signature_version: str = "2",
                 interval: float = 0.5, on_sent: Callable[[SentMessage], object] | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.ses = client("ses")
        self.sqs = client("sqs")
        self.queue_url = queue_url
        self.topic_arn = topic_arn
        self.identity = identity
        self.version = signature_version
        self.interval = interval
        self.on_sent = on_sent  # sees each new message once, before it is answered (the mail viewer's copy)
        self.answered_file = Path(answered_file)
        self.answered: set[str] = set()
        self.offsets: dict[str, int] = {}  # instances of each SES model already looked at
        if self.answered_file.exists():
            self.answered = set(self.answered_file.read_text().split())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _fetch(self) -> tuple[dict, dict[str, int] | None]:
        query = "service=ses" + "".join(f"&offset_{m}={n}" for m, n in sorted(self.offsets.items()))
        with urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json?{query}", timeout=60) as resp:
            data = json.load(resp)
        counts = (data.get("ses") or {}).get("_counts")
        if counts is None:  # plain moto: the full dump, every time
            return data, None
        if any(counts.get(m, 0) < n for m, n in self.offsets.items()):  # moto was reset
            self.offsets = {}
            return self._fetch()
        return data, counts

    def poll_once(self) -> int:
        """Answers what is new; returns how many notifications it queued."""
        data, counts = self._fetch()
        queued = 0
        for sent in sent_messages(data):
            if sent.message_id in self.answered:
                continue
            if self.on_sent:
                try:
                    self.on_sent(sent)
                except Exception as exc:  # noqa: BLE001 - a lost copy must not stop the answers
                    log.warning("keeping a copy of SES message %s failed: %s", sent.message_id, exc)
            envelopes = [json.dumps(notification_envelope(self.identity, self.topic_arn, json.dumps(n),
                                                          version=self.version))
                         for n in notifications_for(sent)]
            # One SendMessage each, in order, so a recipient's Delivery goes ahead of its Complaint.
            for body in envelopes:
                self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
            queued += len(envelopes)
            self.answered.add(sent.message_id)
            with self.answered_file.open("a") as f:
                f.write(sent.message_id + "\n")
        if counts is not None:
            self.offsets = {m: counts[m] for m in ("RawMessage", "Message") if m in counts}
        return queued

    def _sent_count(self) -> float:
        return float(self.ses.get_send_quota().get("SentLast24Hours", 0))

    def run(self) -> None:
        last = None
        rounds = 0
        while not self._stop.is_set():
            try:
                count = self._sent_count()
                if count != last:
                    last = count
                    rounds = 2  # once more after the change: moto counts a send before storing it
                if rounds:
                    rounds -= 1
                    n = self.poll_once()
                    if n:
                        log.info("queued %d SES notifications", n)
            except Exception as exc:  # noqa: BLE001 - keep answering after a hiccup
                log.warning("mailbox simulator poll failed: %s", exc)
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="mailbox-simulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
