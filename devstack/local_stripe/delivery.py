"""Delivery of events to the stripe-events SQS queue, as Stripe's EventBridge integration or a
webhook forwarded through API Gateway would put them there.

eventbridge: the body is an EventBridge envelope whose `detail` is the event (production path).
webhook:     the body is the event JSON; its Stripe-Signature (t=<unix>,v1=HMAC-SHA256 of
             "<t>.<body>" with the webhook secret) rides as the SQS string attribute
             `Stripe-Signature`. t is wall time: a receiver checks it against its own clock.
off:         events are only recorded.
A background thread sends in batches of 10; the delivery faults (duplicates, reordering,
delays) are applied on the way.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import hmac
import json
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from devstack.local_stripe.errors import invalid
from devstack.local_stripe.faults import Faults

log = logging.getLogger("local_stripe.delivery")

MODES = ("eventbridge", "webhook", "off")


@dataclass
class DeliveryConfig:
    mode: str = "off"
    queue_url: str = ""
    sqs_endpoint: str = ""
    region: str = "us-east-1"
    account: str = "000000000000"
    source_id: str = "acct_local"
    webhook_secret: str = "whsec_local"

    @property
    def source(self) -> str:
        return f"aws.partner/stripe.com/{self.source_id}"

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out["webhook_secret"] = "whsec_…" if self.webhook_secret else ""
        out["source"] = self.source
        return out

    def update(self, params: dict[str, Any]) -> None:
        known = {"mode", "queue_url", "sqs_endpoint", "region", "account", "source_id", "webhook_secret"}
        for key, value in params.items():
            if key not in known:
                raise invalid(f"unknown delivery setting {key!r}; known: {', '.join(sorted(known))}", key)
            if not isinstance(value, str):
                raise invalid(f"delivery setting {key} must be a string", key)
        if params.get("mode", self.mode) not in MODES:
            raise invalid(f"delivery mode must be one of {', '.join(MODES)}", "mode")
        for key, value in params.items():
            setattr(self, key, value)


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def eventbridge_body(config: DeliveryConfig, event_type: str, created: int, payload: str) -> str:
    head = {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": event_type, "source": config.source,
        "account": config.account,
        "time": dt.datetime.fromtimestamp(created, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": config.region,
        "resources": [f"arn:aws:events:{config.region}::event-source/{config.source}"],
    }
    return json.dumps(head)[:-1] + ', "detail": ' + payload + "}"


@dataclass
class Outgoing:
    event_id: str
    body: str
    attributes: dict[str, Any] = field(default_factory=dict)


class Deliverer:
    def __init__(self, config: DeliveryConfig, faults: Faults) -> None:
        self.config = config
        self.faults = faults
        self._pending: deque[Outgoing] = deque()
        self._delayed: list[tuple[float, int, Outgoing]] = []
        self._seq = 0
        self._cond = threading.Condition()
        self._busy = False
        self._stop = False
        self._client: Any = None
        self._client_key: tuple[str, str] | None = None
        self.sent = 0
        self.failed = 0
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="local-stripe-delivery", daemon=True)
        self._thread.start()

    @property
    def active(self) -> bool:
        return self.config.mode != "off" and bool(self.config.queue_url)

    def submit(self, event_id: str, event_type: str, created: int, payload: str) -> None:
        if not self.active:
            return
        if self.config.mode == "eventbridge":
            out = Outgoing(event_id, eventbridge_body(self.config, event_type, created, payload))
        else:
            out = Outgoing(event_id, payload, {"Stripe-Signature": {
                "DataType": "String", "StringValue": sign(payload, self.config.webhook_secret)}})
        copies = [out]
        if self.faults.duplicate_rate and self.faults.rng.random() < self.faults.duplicate_rate:
            copies.append(out)
        with self._cond:
            for item in copies:
                if self.faults.delay_rate and self.faults.rng.random() < self.faults.delay_rate:
                    self._seq += 1
                    heapq.heappush(self._delayed, (time.monotonic() + self.faults.delay_seconds, self._seq, item))
                else:
                    self._pending.append(item)
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0, include_delayed: bool = False) -> bool:
        """Waits until everything queued (and, if asked, everything delayed) has been sent."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if include_delayed:
                while self._delayed:
                    self._pending.append(heapq.heappop(self._delayed)[2])
                self._cond.notify_all()
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"sent": self.sent, "failed": self.failed, "pending": len(self._pending),
                    "delayed": len(self._delayed), "last_error": self.last_error}

    def clear(self) -> None:
        with self._cond:
            self._pending.clear()
            self._delayed.clear()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _sqs(self) -> Any:
        key = (self.config.sqs_endpoint, self.config.region)
        if self._client is None or self._client_key != key:
            import boto3

            self._client = boto3.session.Session().client(
                "sqs", endpoint_url=self.config.sqs_endpoint or None, region_name=self.config.region,
                aws_access_key_id="testing", aws_secret_access_key="testing")
            self._client_key = key
        return self._client

    def _take(self) -> list[Outgoing] | None:
        with self._cond:
            while not self._stop:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    self._pending.append(heapq.heappop(self._delayed)[2])
                window = max(1, self.faults.reorder_window)
                if self._pending and window > 1 and len(self._pending) < window:
                    self._cond.wait(0.05)  # gather a window to shuffle; send what came after a pause
                    if len(self._pending) < window and not self._stop:
                        window = len(self._pending)
                if self._pending:
                    batch = [self._pending.popleft() for _ in range(min(max(10, window), len(self._pending)))]
                    if window > 1:
                        self.faults.rng.shuffle(batch)
                    self._busy = True
                    return batch
                wait = (self._delayed[0][0] - now) if self._delayed else 0.5
                self._cond.wait(max(0.01, min(wait, 0.5)))
            return None

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._send(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _send(self, batch: list[Outgoing]) -> None:
        for start in range(0, len(batch), 10):
            chunk = batch[start:start + 10]
            entries = []
            for i, out in enumerate(chunk):
                entry: dict[str, Any] = {"Id": str(i), "MessageBody": out.body}
                if out.attributes:
                    entry["MessageAttributes"] = out.attributes
                entries.append(entry)
            for attempt in range(5):
                try:
                    resp = self._sqs().send_message_batch(QueueUrl=self.config.queue_url, Entries=entries)
                except Exception as exc:  # the queue may be restarting: retry, then count as failed
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    time.sleep(0.2 * (attempt + 1))
                    continue
                failed = resp.get("Failed", [])
                self.sent += len(entries) - len(failed)
                if not failed:
                    break
                entries = [e for e in entries if e["Id"] in {f["Id"] for f in failed}]
                self.last_error = str(failed[0])
            else:
                self.failed += len(entries)
                log.warning("could not deliver %d events to %s: %s", len(entries), self.config.queue_url,
                            self.last_error)
