"""SMTP sink: an aiosmtpd server that keeps every message as a .eml file, plus a reader (and
MailDir, the same layout written from Python: the copy of moto's SES mail).

Each accepted message becomes <dir>/<seq>-<id>.eml (the raw bytes as received); then one
line {name, mail_from, rcpt_tos, received_at} is appended to <dir>/envelopes.jsonl. Readers
go by that index, which names only complete files. No fsync, one file per message and DATA
read in large chunks rather than line by line: the dispatch benchmark pushes >1000 messages/s
through the sink.

Fault injection by recipient local part (any domain; an optional +tag keeps addresses
unique between tests):
  smtp-<code>-<n>[+tag]@...  answers <code> to RCPT for the first <n> attempts at that exact
                             address, then accepts (e.g. smtp-451-2@x, smtp-421-1@x)
  smtp-<code>[+tag]@...      always answers <code> (e.g. smtp-550@x)
After a 421 the sink closes the connection, as a real server does.

Latency: `SmtpSink(..., latency=0.05)` holds each DATA reply that long, as a remote server's
queueing does (bench/email_dispatch.py's scale-out phase); connections wait concurrently (an
asyncio sleep), so N open connections still take N messages per latency period.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import DATA_SIZE_DEFAULT, MISSING, SMTP, syntax

FAULT_RE = re.compile(r"^smtp-(?P<code>[45]\d\d)(?:-(?P<n>\d+))?(?:\+[^@]*)?$", re.IGNORECASE)
REPLIES = {
    421: "421 4.3.2 Service not available, closing transmission channel (injected)",
    450: "450 4.2.0 Mailbox unavailable (injected)",
    451: "451 4.3.0 Local error in processing (injected)",
    452: "452 4.5.3 Insufficient system storage (injected)",
    550: "550 5.1.1 User unknown (injected)",
    552: "552 5.3.4 Message size exceeds fixed limit (injected)",
    553: "553 5.1.3 Mailbox name not allowed (injected)",
    554: "554 5.7.1 Transaction failed (injected)",
}


def injected_reply(address: str, attempts: Counter) -> str | None:
    """The fault reply for this RCPT attempt, or None to accept. Counts attempts per address."""
    local = address.rsplit("@", 1)[0]
    m = FAULT_RE.match(local)
    if not m:
        return None
    code = int(m["code"])
    key = address.lower()
    attempts[key] += 1
    if m["n"] is not None and attempts[key] > int(m["n"]):
        return None
    return REPLIES.get(code, f"{code} {'4.0.0' if code < 500 else '5.0.0'} Injected failure")


INDEX = "envelopes.jsonl"


class SinkHandler:
    """aiosmtpd handler; runs on the server's event loop."""

    def __init__(self, directory: Path, latency: float = 0.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.latency = latency   # seconds each DATA reply is held
        self.attempts: Counter = Counter()
        self._seq = itertools.count(1)
        self._prefix = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        # O_APPEND: a reader's clear() may truncate the index; we keep appending at its end.
        self._index = os.open(self.directory / INDEX, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        reply = injected_reply(address, self.attempts)
        if reply is not None:
            if reply.startswith("421") and server.transport is not None:
                # 421 means the server is closing the channel (RFC 5321 3.8): close it after the reply.
                asyncio.get_running_loop().call_soon(server.transport.close)
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        name = f"{self._prefix}-{next(self._seq):08d}"
        data = envelope.original_content if envelope.original_content is not None else envelope.content
        fd = os.open(self.directory / f"{name}.eml", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data if isinstance(data, bytes) else data.encode("utf-8"))
        finally:
            os.close(fd)
        meta = {"name": name, "mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
                "received_at": time.time()}
        os.write(self._index, (json.dumps(meta) + "\n").encode())
        return f"250 2.0.0 Ok: queued as {name}"

    def close(self) -> None:
        os.close(self._index)


_PLAIN_PATH = re.compile(r"\s*<([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>\s*(.*)\Z",
                         re.S)


class FastSMTP(SMTP):
    """aiosmtpd's SMTP, cheaper per message; what it accepts and stores is unchanged.

    aiosmtpd reads DATA one line at a time (a readuntil per line) and parses every MAIL/RCPT
    path with the email package's RFC 5322 header parser; at a thousand messages a second
    those are most of the sink's CPU. DATA is read up to each ".\r\n" instead (checking that
    the dot starts a line), and a plain <local@domain> path is taken by a regex, anything
    else by aiosmtpd. Falls back to aiosmtpd's own DATA if its internals change.
    """

    def _getaddr(self, arg: str):
        m = _PLAIN_PATH.match(arg)
        if m and len(m.group(1).rpartition("@")[0]) <= (self.local_part_limit or len(arg)):
            return m.group(1), m.group(2)
        return super()._getaddr(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802
        reader = getattr(self, "_reader", None)
        if not hasattr(reader, "_limit") or not hasattr(self, "_call_handler_hook"):
            return await super().smtp_DATA(arg)
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        limit = self.data_size_limit or DATA_SIZE_DEFAULT
        saved_limit = reader._limit
        reader._limit = limit + 1024
        buf = bytearray()
        try:
            while True:
                buf += await reader.readuntil(b".\r\n")
                n = len(buf)
                if n == 3 or buf[n - 5:n - 3] == b"\r\n":  # the dot starts a line: end of data
                    break
        except asyncio.LimitOverrunError:
            await self.push("552 Error: Too much mail data")
            self.transport.close()
            return
        except asyncio.CancelledError:
            self._writer.close()
            raise
        finally:
            reader._limit = saved_limit
        del buf[-3:]
        if len(buf) > limit:
            self._set_post_data_state()
            await self.push("552 Error: Too much mail data")
            return
        # Transparency (RFC 5321 4.5.2): a leading dot was doubled by the client.
        if buf[:1] == b".":
            del buf[0]
        content = bytes(buf).replace(b"\r\n.", b"\r\n")
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)


class SmtpSink:
    """The server, on 127.0.0.1:port in a background thread (aiosmtpd Controller)."""

    def __init__(self, directory: Path, port: int, host: str = "127.0.0.1", latency: float = 0.0) -> None:
        self.handler = SinkHandler(directory, latency)
        self.controller = _Controller(self.handler, hostname=host, port=port, ready_timeout=10,
                                      data_size_limit=50 * 1024 * 1024)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()
        self.handler.close()


class _Controller(Controller):
    def factory(self) -> SMTP:
        return FastSMTP(self.handler, **self.SMTP_kwargs)


@dataclass(frozen=True)
class SunkMessage:
    name: str
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    received_at: float
    extra: dict | None = None  # what MailDir.add was given besides the envelope (e.g. the SES id)

    def message(self):
        from email import policy
        from email.parser import BytesParser

        return BytesParser(policy=policy.default).parsebytes(self.raw)


class MailDir:
    """Writes messages in the sink's layout (<seq>-<id>.eml, then a line in envelopes.jsonl), for
    mail that did not come through the SMTP socket: the mailbox simulator keeps here a copy of
    what moto's SES accepted, so the mail viewer and SinkReader read both the same way."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._seq = itertools.count(1)
        self._prefix = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self._lock = threading.Lock()

    def add(self, raw: bytes, mail_from: str, rcpt_tos: list[str], **extra: str) -> str:
        with self._lock:
            name = f"{self._prefix}-{next(self._seq):08d}"
            (self.directory / f"{name}.eml").write_bytes(raw)
            meta = {"name": name, "mail_from": mail_from, "rcpt_tos": list(rcpt_tos), "received_at": time.time(),
                    **extra}
            with open(self.directory / INDEX, "a") as index:
                index.write(json.dumps(meta) + "\n")
        return name


class SinkReader:
    """Reads what the sink stored; usable from any process."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()

    def _index(self) -> list[dict]:
        try:
            text = (self.directory / INDEX).read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.split("\n")[:-1] if line]  # a last partial line waits

    def envelopes(self) -> list[dict]:
        """The index: {name, mail_from, rcpt_tos, received_at, ...} per stored message, oldest first."""
        return self._index()

    def read(self, name: str) -> bytes | None:
        """The raw bytes of one stored message (None when cleared meanwhile)."""
        try:
            return (self.directory / f"{name}.eml").read_bytes()
        except FileNotFoundError:
            return None

    def messages(self) -> list[SunkMessage]:
        """Every stored message, oldest first."""
        out: list[SunkMessage] = []
        for meta in self._index():
            try:
                raw = (self.directory / f"{meta['name']}.eml").read_bytes()
            except FileNotFoundError:  # cleared meanwhile
                continue
            extra = {k: v for k, v in meta.items() if k not in ("name", "mail_from", "rcpt_tos", "received_at")}
            out.append(SunkMessage(meta["name"], meta["mail_from"], meta["rcpt_tos"], raw, meta["received_at"],
                                   extra or None))
        return out

    def to(self, address: str) -> list[SunkMessage]:
        address = address.lower()
        return [m for m in self.messages() if address in (r.lower() for r in m.rcpt_tos)]

    def count(self) -> int:
        return len(self._index())

    def wait_for(self, n: int, timeout: float = 10.0) -> list[SunkMessage]:
        """Waits until at least n messages are stored; returns them all."""
        deadline = time.monotonic() + timeout
        while self.count() < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages()

    def clear(self) -> None:
        with self._lock:
            if not self.directory.exists():
                return
            index = self.directory / INDEX
            if index.exists():
                os.truncate(index, 0)
            for path in self.directory.glob("*.eml"):
                path.unlink(missing_ok=True)
