"""SMTP sink: an aiosmtpd server that keeps every message as a .eml file, plus a reader.

Each accepted message becomes <dir>/<seq>-<uuid>.eml (the raw bytes as received) with a
<same name>.json sidecar holding the envelope (mail_from, rcpt_tos, received_at). The
sidecar is written first and the .eml renamed into place, so a reader never sees half a
message. No fsync: the sink must take >1000 messages/s.

Fault injection by recipient local part (any domain; an optional +tag keeps addresses
unique between tests):
  smtp-<code>-<n>[+tag]@...  answers <code> to RCPT for the first <n> attempts at that exact
                             address, then accepts (e.g. smtp-451-2@x, smtp-421-1@x)
  smtp-<code>[+tag]@...      always answers <code> (e.g. smtp-550@x)
After a 421 the sink closes the connection, as a real server does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

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


class SinkHandler:
    """aiosmtpd handler; runs on the server's event loop."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.attempts: Counter = Counter()
        self._seq = itertools.count(1)
        self._prefix = time.strftime("%Y%m%dT%H%M%S")

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
        name = f"{self._prefix}-{next(self._seq):08d}-{uuid.uuid4().hex[:12]}"
        meta = {"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
                "received_at": time.time()}
        (self.directory / f"{name}.json").write_text(json.dumps(meta))
        tmp = self.directory / f".{name}.tmp"
        data = envelope.original_content if envelope.original_content is not None else envelope.content
        tmp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        tmp.replace(self.directory / f"{name}.eml")
        return f"250 2.0.0 Ok: queued as {name}"


class SmtpSink:
    """The server, on 127.0.0.1:port in a background thread (aiosmtpd Controller)."""

    def __init__(self, directory: Path, port: int, host: str = "127.0.0.1") -> None:
        from aiosmtpd.controller import Controller

        self.handler = SinkHandler(directory)
        self.controller = Controller(
            self.handler, hostname=host, port=port, ready_timeout=10,
            server_kwargs={"data_size_limit": 50 * 1024 * 1024},
        )

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


@dataclass(frozen=True)
class SunkMessage:
    name: str
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    received_at: float

    def message(self):
        from email import policy
        from email.parser import BytesParser

        return BytesParser(policy=policy.default).parsebytes(self.raw)


class SinkReader:
    """Reads what the sink stored; usable from any process."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()

    def messages(self) -> list[SunkMessage]:
        """Every stored message, oldest first."""
        out: list[SunkMessage] = []
        if not self.directory.exists():
            return out
        for eml in sorted(self.directory.glob("*.eml")):
            try:
                meta = json.loads(eml.with_suffix(".json").read_text())
                raw = eml.read_bytes()
            except FileNotFoundError:  # cleared meanwhile
                continue
            out.append(SunkMessage(eml.stem, meta["mail_from"], meta["rcpt_tos"], raw, meta["received_at"]))
        return out

    def to(self, address: str) -> list[SunkMessage]:
        address = address.lower()
        return [m for m in self.messages() if address in (r.lower() for r in m.rcpt_tos)]

    def count(self) -> int:
        return sum(1 for _ in self.directory.glob("*.eml")) if self.directory.exists() else 0

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
            for path in self.directory.iterdir():
                if path.suffix in (".eml", ".json"):
                    path.unlink(missing_ok=True)
