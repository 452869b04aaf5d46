"""The mail viewer: every email the local stack sent, readable in a browser.

Served by the stack's services process on http://127.0.0.1:$DEVSTACK_MAIL_PORT (8025; another free
port when 8025 is taken and the variable is unset). It reads two folders in the SMTP sink's
layout (<name>.eml plus envelopes.jsonl):

  <state>/smtp-sink/   what reached the SMTP sink (EMAIL_TRANSPORT=smtp)
  <state>/ses-mail/    what moto's SES accepted (EMAIL_TRANSPORT=ses, make dev's default); the
                       mailbox simulator, which reads every SES send anyway, keeps the copy

Pages: `/` the newest messages (`?q=` filters on recipient, subject, kind; `?refresh=5` reloads),
`/messages/<id>` one message (recipients, the headers that matter, the rendered HTML in a
sandboxed frame, the text part, every header), `/messages/<id>/html|text|raw`, and the same as
JSON under `/api/messages` and `/api/messages/<id>`.

Why a page of our own rather than MailDev or Mailpit: both are good, but MailDev needs Node and
npm, and Mailpit is a Go binary; `make dev` installs only Python packages. The stack already keeps
every message on disk, so the viewer is a reader over those folders on the standard library's
HTTP server, nothing to install. The HTML part is served on its own URL with a
`Content-Security-Policy: sandbox` header and shown in a sandboxed iframe: no script in an email
runs, nothing it links loads by itself.
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from devstack.mailbox_simulator import SentMessage
from devstack.smtp_sink import MailDir, SinkReader

log = logging.getLogger("devstack.mail_viewer")

LIMIT = 200
_ID = re.compile(r"^(smtp|ses)-([A-Za-z0-9-]+)$")
_HTML_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def keep_ses_copy(maildir: MailDir):
    """The mailbox simulator's on_sent hook: each SES message into maildir (a simple send, which
    has no MIME text, is written as the text message it describes)."""
    def keep(sent: SentMessage) -> None:
        raw = sent.raw.encode("utf-8", "surrogateescape") if sent.raw else _simple_mime(sent)
        maildir.add(raw, sent.source, sent.recipients, transport="ses", ses_message_id=sent.message_id)
    return keep


def _simple_mime(sent: SentMessage) -> bytes:
    msg = EmailMessage()
    msg["From"] = sent.source
    msg["To"] = ", ".join(sent.recipients)
    msg["Subject"] = sent.subject
    if sent.body.lstrip().startswith("<"):
        msg.set_content(sent.body, subtype="html")
    else:
        msg.set_content(sent.body)
    return msg.as_bytes()


@dataclass(frozen=True)
class Mail:
    id: str
    transport: str
    received_at: float
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    ses_message_id: str | None = None

    def parsed(self) -> EmailMessage:
        return BytesParser(policy=policy.default).parsebytes(self.raw)

    @staticmethod
    def _part(msg: EmailMessage, subtype: str) -> str | None:
        part = msg.get_body(preferencelist=(subtype,))
        if part is None:
            return None
        try:
            return part.get_content()
        except (LookupError, ValueError):  # an unknown charset or a broken encoding: show the bytes
            return part.get_payload(decode=True).decode("utf-8", "replace")

    def summary(self, msg: EmailMessage | None = None) -> dict[str, Any]:
        msg = msg or self.parsed()
        return {
            "id": self.id,
            "transport": self.transport,
            "received_at": datetime.fromtimestamp(self.received_at, UTC).isoformat(timespec="seconds"),
            "envelope_from": self.mail_from,
            "recipients": self.rcpt_tos,
            "from": str(msg.get("From", "")),
            "to": str(msg.get("To", "")),
            "subject": str(msg.get("Subject", "")),
            "kind": str(msg.get("X-Mailroom-Kind", "")),
            "message_id": str(msg.get("Message-ID", "")),
            "list_unsubscribe": str(msg["List-Unsubscribe"]) if msg["List-Unsubscribe"] else None,
            "ses_message_id": self.ses_message_id,
        }

    def detail(self) -> dict[str, Any]:
        msg = self.parsed()
        return {**self.summary(msg), "headers": [[k, str(v)] for k, v in msg.items()],
                "text": self._part(msg, "plain"), "html": self._part(msg, "html")}


class Mailbox:
    """Both folders, newest first."""

    def __init__(self, folders: dict[str, Path]) -> None:
        self.readers = {transport: SinkReader(path) for transport, path in folders.items()}
        self._summaries: dict[str, dict[str, Any]] = {}   # a stored message never changes: parse it once

    def _entries(self) -> list[tuple[float, str, dict]]:
        out = []
        for transport, reader in self.readers.items():
            out.extend((meta["received_at"], transport, meta) for meta in reader.envelopes())
        out.sort(key=lambda e: e[0], reverse=True)
        return out

    def _load(self, transport: str, meta: dict) -> Mail | None:
        raw = self.readers[transport].read(meta["name"])
        if raw is None:
            return None
        return Mail(f"{transport}-{meta['name']}", transport, meta["received_at"], meta["mail_from"],
                    list(meta["rcpt_tos"]), raw, meta.get("ses_message_id"))

    def count(self) -> int:
        return sum(reader.count() for reader in self.readers.values())

    def newest(self, limit: int = LIMIT, query: str = "") -> list[dict[str, Any]]:
        """Summaries of the newest messages; `query` keeps those whose recipient, subject, kind,
        From or To contains it (case-insensitive)."""
        query = query.lower().strip()
        found = []
        for _, transport, meta in self._entries():
            key = f"{transport}-{meta['name']}"
            summary = self._summaries.get(key)
            if summary is None:
                mail = self._load(transport, meta)
                if mail is None:  # cleared meanwhile
                    continue
                summary = self._summaries[key] = mail.summary()
            fields = [*summary["recipients"], *(str(summary[k]) for k in ("subject", "kind", "to", "from"))]
            if query and not any(query in f.lower() for f in fields):
                continue
            found.append(summary)
            if len(found) >= limit:
                break
        return found

    def get(self, mail_id: str) -> Mail | None:
        m = _ID.match(mail_id)
        if not m or m.group(1) not in self.readers:
            return None
        for meta in self.readers[m.group(1)].envelopes():
            if meta["name"] == m.group(2):
                return self._load(m.group(1), meta)
        return None


# --- pages -----------------------------------------------------------------------------------

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2430; }
header { background: #1d2430; color: #fff; padding: .6em 1em; display: flex; gap: 1em; align-items: baseline; }
header a { color: #fff; } main { padding: 1em; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: .3em .6em; vertical-align: top; }
tbody tr:nth-child(odd) { background: #f3f5f8; } th { background: #e4e8ee; }
.headers td:first-child, .summary th { white-space: nowrap; width: 1%; }
iframe { width: 100%; height: 640px; border: 1px solid #c8ced8; background: #fff; }
pre { white-space: pre-wrap; background: #f3f5f8; padding: 1em; border: 1px solid #c8ced8; }
.tag { font-size: 12px; padding: 0 .4em; border-radius: 3px; background: #e4e8ee; }
form { display: inline; } input[type=search] { width: 22em; }
"""


def _page(title: str, body: str, refresh: int = 0) -> bytes:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh > 0 else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}<title>{html.escape(title)}</title>'
            f'<style>{_STYLE}</style></head><body><header><strong><a href="/">Mailroom mail viewer</a></strong>'
            f'<span>every email the local stack sent (SES and SMTP)</span></header><main>{body}</main></body></html>'
            ).encode()


def list_page(box: Mailbox, query: str = "", refresh: int = 0, limit: int = LIMIT) -> bytes:
    rows = box.newest(limit, query)
    e = html.escape
    lines = "".join(
        f'<tr><td>{e(m["received_at"])}</td><td><span class="tag">{e(m["transport"])}</span></td>'
        f'<td>{e(", ".join(m["recipients"]))}</td><td><a href="/messages/{e(m["id"])}">{e(m["subject"] or "(no subject)")}'
        f'</a></td><td>{e(m["kind"])}</td></tr>' for m in rows)
    total = box.count()
    body = (f'<p><form method="get" action="/"><input type="search" name="q" value="{e(query)}" '
            f'placeholder="recipient, subject or kind"> <button>Filter</button></form> '
            f'{len(rows)} shown of {total} message(s), newest first. '
            f'<a href="/?refresh=5{"&q=" + e(query) if query else ""}">reload every 5 s</a></p>'
            f'<table><thead><tr><th>received (UTC)</th><th>via</th><th>recipient</th><th>subject</th><th>kind</th>'
            f'</tr></thead><tbody>{lines}</tbody></table>'
            + ("" if rows else "<p>No mail yet: what the stack sends through SES or SMTP shows up here.</p>"))
    return _page("Mail viewer", body, refresh)


def message_page(mail: Mail) -> bytes:
    d = mail.detail()
    e = html.escape
    summary_rows = [("Recipient" + ("s" if len(d["recipients"]) > 1 else ""), ", ".join(d["recipients"])),
                    ("From", d["from"]), ("To (header)", d["to"]), ("Subject", d["subject"]),
                    ("Message-ID", d["message_id"]),
                    ("List-Unsubscribe", d["list_unsubscribe"] or "(none: this kind carries no List-Unsubscribe)"),
                    ("Kind", d["kind"]), ("Sent via", d["transport"] + (f" (SES MessageId {d['ses_message_id']})"
                                                                      if d["ses_message_id"] else "")),
                    ("Received (UTC)", d["received_at"])]
    summary = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in summary_rows)
    headers = "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in d["headers"])
    html_part = (f'<iframe title="HTML part" sandbox src="/messages/{e(mail.id)}/html"></iframe>'
                 if d["html"] is not None else "<p>(no HTML part)</p>")
    text_part = f'<pre id="text-part">{e(d["text"])}</pre>' if d["text"] is not None else "<p>(no text part)</p>"
    body = (f'<h1>{e(d["subject"] or "(no subject)")}</h1><table class="summary">{summary}</table>'
            f'<h2>HTML</h2>{html_part}<h2>Text</h2>{text_part}'
            f'<h2>Headers</h2><table class="headers"><tbody>{headers}</tbody></table>'
            f'<p><a href="/messages/{e(mail.id)}/raw">raw message</a></p>')
    return _page(d["subject"] or "(no subject)", body)


class _Handler(BaseHTTPRequestHandler):
    box: Mailbox

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data, indent=1).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p]
        try:
            limit = max(1, min(int(query.get("limit", LIMIT)), 5000))
            refresh = int(query.get("refresh", 0))
        except ValueError:
            self._send(400, b"limit and refresh are numbers", "text/plain; charset=utf-8")
            return
        if not parts:
            self._send(200, list_page(self.box, query.get("q", ""), refresh, limit), "text/html; charset=utf-8")
            return
        if parts == ["api", "messages"]:
            self._json(self.box.newest(limit, query.get("q", "")))
            return
        if len(parts) >= 2 and parts[0] in ("messages", "api") and parts[-1] != "messages":
            api = parts[0] == "api"
            rest = parts[2:] if api else parts[1:]
            mail = self.box.get(rest[0]) if rest and (not api or parts[1] == "messages") else None
            if mail is None:
                self._send(404, _page("Not found", "<p>No such message.</p>"), "text/html; charset=utf-8")
                return
            view = rest[1] if len(rest) > 1 else ""
            if api and not view:
                self._json(mail.detail())
            elif not api and not view:
                self._send(200, message_page(mail), "text/html; charset=utf-8")
            elif view == "html":
                part = mail.detail()["html"]
                self._send(200 if part is not None else 404, (part or "no HTML part").encode(),
                           "text/html; charset=utf-8", {"Content-Security-Policy": _HTML_CSP})
            elif view == "text":
                self._send(200, (mail.detail()["text"] or "").encode(), "text/plain; charset=utf-8")
            elif view == "raw":
                self._send(200, mail.raw, "text/plain; charset=utf-8")
            else:
                self._send(404, b"unknown view", "text/plain; charset=utf-8")
            return
        self._send(404, _page("Not found", "<p>Nothing here.</p>"), "text/html; charset=utf-8")


class MailViewer:
    """The viewer's HTTP server on 127.0.0.1:port, in a background thread."""

    def __init__(self, folders: dict[str, Path], port: int, host: str = "127.0.0.1") -> None:
        handler = type("Handler", (_Handler,), {"box": Mailbox(folders)})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, name="mail-viewer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
