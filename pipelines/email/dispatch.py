"""dispatch(): the application's call to request an email (validates, then enqueues)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any, Protocol

from pipelines import settings
from pipelines.email.catalogue import KindSpec
from pipelines.email.request import EmailRequest, Recipient, parse_request


class _Queue(Protocol):
    def send(self, bodies: Iterable[str]) -> int: ...


def _recipient(r: Recipient | Mapping[str, Any]) -> dict[str, Any]:
    data = asdict(r) if isinstance(r, Recipient) else dict(r)
    return {k: v for k, v in data.items() if v is not None}


def build_request(kind: str, recipients: Iterable[Recipient | Mapping[str, Any]], context: Mapping[str, Any], *,
                  request_id: str | None = None, sender: str | None = None, repeat_window: str | None = None,
                  remote_ip: str | None = None, kinds: dict[str, KindSpec] | None = None) -> EmailRequest:
    """The validated request; raises request.BadRequest (a ValueError) naming what is wrong."""
    body: dict[str, Any] = {"request_id": request_id or str(uuid.uuid4()), "kind": kind,
                            "recipients": [_recipient(r) for r in recipients], "context": dict(context)}
    for key, value in (("sender", sender), ("repeat_window", repeat_window), ("remote_ip", remote_ip)):
        if value is not None:
            body[key] = value
    return parse_request(body, kinds)


def _default_queue() -> _Queue:
    from resources.aws import SQSQueueResource

    name = settings.value("EMAIL_REQUESTS_QUEUE")
    if not name:
        raise ValueError("EMAIL_REQUESTS_QUEUE is not set: name the email-requests queue, or pass queue=")
    # No AWS_REGION: boto3 falls back on its own configuration (AWS_DEFAULT_REGION, ~/.aws/config).
    return SQSQueueResource(queue_name=name, region_name=settings.value("AWS_REGION") or None)


def dispatch(kind: str, recipients: Iterable[Recipient | Mapping[str, Any]], context: Mapping[str, Any], *,
             request_id: str | None = None, sender: str | None = None, repeat_window: str | None = None,
             remote_ip: str | None = None, queue: _Queue | None = None,
             kinds: dict[str, KindSpec] | None = None) -> str:
    """Validate an email request and put it on the email-requests queue; returns its request_id.

    `queue` is anything with `send(bodies)` (an SQSQueueResource); by default the queue named
    by EMAIL_REQUESTS_QUEUE. Raises ValueError for a request the consumer would quarantine.
    """
    request = build_request(kind, recipients, context, request_id=request_id, sender=sender,
                            repeat_window=repeat_window, remote_ip=remote_ip, kinds=kinds)
    (queue or _default_queue()).send([request.to_json()])
    return request.request_id
