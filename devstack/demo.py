"""Demo traffic for `make dev`: a few email requests every few seconds on email-requests.

Recipients are mailbox-simulator addresses with a +label (AWS's simulator accepts labels),
so each request reaches a fresh address. The mix is a healthy platform's: deliveries, with the
odd out-of-office reply and soft bounce (neither counts against SES's bounce rate), and no hard
bounce or complaint, so every check is green. `python -m devstack incident` adds the
unhealthy traffic on purpose (devstack/incidents.py).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import uuid
from typing import Any

log = logging.getLogger("devstack.demo")

SIM = "simulator.amazonses.com"
# Weights of the simulator outcomes the demo sends to (mailbox_simulator.outcome).
OUTCOMES = ("success",) * 8 + ("ooto", "soft-bounce")
USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")


def _context(kind: str, username: str, address: str, rng: random.Random) -> dict[str, Any]:
    token = uuid.UUID(int=rng.getrandbits(128)).hex  # a stand-in token; the dispatcher must never store it
    return {
        "password-reset": {"n_hours": 6, "token": token, "username": username},
        "verify-email": {"email_address": address, "n_hours": 24, "token": token},
        "new-email-added": {"new_email_address": f"{username}.new@example.org", "username": username},
        "two-factor-added": {"method": rng.choice(["totp", "webauthn"]), "username": username},
    }[kind]


KINDS = ("password-reset", "verify-email", "new-email-added", "two-factor-added")


def demo_request(rng: random.Random, outcome: str | None = None, kind: str | None = None,
                 verified: bool = True) -> dict[str, Any]:
    """One email request in the dispatcher's format (pipelines/email/email_request.schema.json),
    to a simulator address with the given outcome (default: drawn from OUTCOMES)."""
    kind = kind or rng.choice(KINDS)
    username = rng.choice(USERS)
    label = uuid.UUID(int=rng.getrandbits(128)).hex[:8]
    address = f"{outcome or rng.choice(OUTCOMES)}+{username}-{label}@{SIM}"
    return {
        "request_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "kind": kind,
        "recipients": [{"email": address, "verified": verified, "user_id": f"u-{username}",
                        "name": username.capitalize(), "username": username, "acting_user": True}],
        "context": _context(kind, username, address, rng),
        "remote_ip": "203.0.113.7",
    }


class DemoTraffic:
    def __init__(self, sqs: Any, queue_url: str, interval: float = 5.0, batch: tuple[int, int] = (2, 4),
                 seed: int | None = None) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.interval = interval
        self.batch = batch
        self.rng = random.Random(seed)
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send_batch(self) -> int:
        n = self.rng.randint(*self.batch)
        entries = [{"Id": str(i), "MessageBody": json.dumps(demo_request(self.rng))} for i in range(n)]
        self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        self.sent += n
        return n

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.send_batch()
            except Exception as exc:  # noqa: BLE001 - the stack may be stopping
                log.warning("demo traffic: %s", exc)
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="demo-traffic", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
