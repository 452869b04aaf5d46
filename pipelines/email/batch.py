"""One drain batch of email requests: parse, quarantine, render, claim, send, record.

`EmailBatchHandler.handle` is the `handle` of pipelines.common.drain.drain: everything it
needs is committed to DuckDB before it returns, and only then are the SQS messages
deleted. Redelivered requests change nothing: rows already sent, skipped or failed are
not claimed again.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import duckdb
import jinja2

from pipelines.common.drain import QueueMessage
from pipelines.common.quarantine import Quarantined, quarantine
from pipelines.email.builder import Builder
from pipelines.email.catalogue import KindSpec, catalogue
from pipelines.email.outbox import Claimed, Outcome, Planned, claim, mark
from pipelines.email.redaction import Redactor, keep_remote_ip, redact_raw_body, redactor_for
from pipelines.email.request import BadRequest, EmailRequest, Recipient, parse_request
from pipelines.email.sending import Sender
from resources.outgoing_email import OutgoingEmail

QUARANTINE_SOURCE = "email-requests"
log = logging.getLogger(__name__)

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


@dataclass
class BatchStats:
    requests: int = 0
    quarantined: int = 0
    recipients: int = 0
    sent: int = 0
    failed: int = 0
    skipped: Counter = field(default_factory=Counter)
    already_recorded: int = 0   # redelivered: sent/skipped/failed before, left alone
    resent_pending: int = 0     # pending from an interrupted run, sent again
    send_seconds: list[float] = field(default_factory=list)     # per email, transport call incl. retries
    record_seconds: list[float] = field(default_factory=list)   # per email, batch start -> outcome committed

    def as_metadata(self) -> dict[str, int]:
        out = {"requests": self.requests, "quarantined": self.quarantined, "recipients": self.recipients,
               "sent": self.sent, "failed": self.failed, "already_recorded": self.already_recorded,
               "resent_pending": self.resent_pending}
        out.update({f"skipped_{k.replace('-', '_')}": v for k, v in sorted(self.skipped.items())})
        return out


def no_address_key(index: int) -> str:
    """Ledger key for a recipient without an address (to_address is part of the primary key)."""
    return f"(no address #{index})"


@dataclass
class _Item:
    request: EmailRequest
    recipient: Recipient
    spec: KindSpec
    redact: Redactor
    planned: Planned
    subject: str | None       # as rendered (the ledger keeps a redacted copy)


class EmailBatchHandler:
    def __init__(self, connect: Connect, builder: Builder, sender: Sender, *, default_sender: str,
                 transport_name: str, kinds: dict[str, KindSpec] | None = None, inflight_window: int = 100,
                 keep_send_seconds: bool = False):
        if not default_sender:
            raise ValueError("a default sender address is required (EMAIL_SENDER)")
        self.connect = connect
        self.builder = builder
        self.sender = sender
        self.default_sender = default_sender
        self.transport_name = transport_name
        self.kinds = kinds if kinds is not None else catalogue()
        self.inflight_window = max(1, inflight_window)
        self.keep_send_seconds = keep_send_seconds
        self.stats = BatchStats()

    # -- parse --------------------------------------------------------------------------------
    def _parse(self, msg: QueueMessage) -> EmailRequest:
        request = parse_request(msg.body, self.kinds)
        self.builder.check_headers(request)
        return request

    def _plan(self, request: EmailRequest) -> list[_Item]:
        spec = self.kinds[request.kind]
        redact = redactor_for(request.context, spec)
        window_s = int(request.repeat_window.total_seconds()) if request.repeat_window else None
        sender = request.sender or self.default_sender
        from_address = self.builder.from_header(sender)[1]
        items = []
        for i, r in enumerate(request.recipients):
            subject = None
            if r.email:
                try:
                    subject = self.builder.render_subject(request.kind, self.builder.context_for(request, r))
                except jinja2.TemplateNotFound:
                    raise BadRequest(f"no subject template for kind {request.kind}") from None
                except jinja2.TemplateError as exc:
                    raise BadRequest(redact(f"subject does not render: {type(exc).__name__}: {exc}")) from None
            planned = Planned(
                request_id=request.request_id, to_address=r.email or no_address_key(i), kind=request.kind,
                from_address=from_address, subject=redact(subject), user_id=r.user_id,
                remote_ip=keep_remote_ip(request.remote_ip, r.acting_user), transport=self.transport_name,
                address=r.email, verified=r.verified, allow_unverified=spec.allow_unverified,
                repeat_window_s=window_s)
            items.append(_Item(request, r, spec, redact, planned, subject))
        return items

    # -- the drain handle ---------------------------------------------------------------------
    def handle(self, batch: list[QueueMessage]) -> None:
        started = time.perf_counter()
        bad: list[Quarantined] = []
        items: list[_Item] = []
        for msg in batch:
            self.stats.requests += 1
            try:
                items.extend(self._plan(self._parse(msg)))
            except BadRequest as exc:
                bad.append(Quarantined(QUARANTINE_SOURCE, msg.sqs_message_id,
                                       redact_raw_body(msg.body, self.kinds), exc.reason))
            except Exception as exc:  # noqa: BLE001 - poison must not block the queue (DESIGN rule 3)
                # no traceback: its message could quote a context value
                log.error("email request %s could not be planned: %s", msg.sqs_message_id, type(exc).__name__)
                bad.append(Quarantined(QUARANTINE_SOURCE, msg.sqs_message_id,
                                       redact_raw_body(msg.body, self.kinds),
                                       f"unexpected error while planning: {type(exc).__name__}"))
        self.stats.quarantined += len(bad)
        self.stats.recipients += len(items)
        with self.connect() as conn:
            quarantine(conn, bad)
            claims = claim(conn, [it.planned for it in items])
            to_send: list[tuple[_Item, Claimed]] = []
            for it, c in zip(items, claims, strict=True):
                if c.status == "pending":
                    if not c.fresh:
                        self.stats.resent_pending += 1
                    to_send.append((it, c))
                elif c.status == "skipped" and c.fresh:
                    self.stats.skipped[c.skip_reason] += 1
                else:
                    self.stats.already_recorded += 1
            # Window k+1 is handed to the senders before window k's outcomes are committed, so the
            # rate limiter never idles on a commit; at most two windows are ever in flight.
            previous = None
            for start in range(0, len(to_send), self.inflight_window):
                current = self._submit(to_send[start:start + self.inflight_window])
                if previous is not None:
                    self._record(conn, *previous, started)
                previous = current
            if previous is not None:
                self._record(conn, *previous, started)
        if bad:
            log.warning("quarantined %d email request(s): %s", len(bad),
                        "; ".join(sorted({q.reason for q in bad}))[:500])

    def _submit(self, window: list[tuple[_Item, Claimed]]) -> tuple[list, list[Outcome], list]:
        early: list[Outcome] = []
        outgoing: list[tuple[object, OutgoingEmail]] = []
        for it, _ in window:
            sender = it.request.sender or self.default_sender
            try:
                built = self.builder.build(it.request, it.recipient, sender, subject=it.subject)
            except Exception as exc:  # noqa: BLE001 - a template bug fails this message, not the run
                early.append(Outcome(it.planned.request_id, it.planned.to_address, "failed", None,
                                     it.redact(f"render: {type(exc).__name__}: {exc}")[:1000], 0))
                continue
            outgoing.append((it, OutgoingEmail(sender=built.sender, recipient=built.recipient, raw=built.raw,
                                               kind=it.request.kind, message_id=built.message_id)))
        return window, early, self.sender.submit_all(outgoing)

    def _record(self, conn: duckdb.DuckDBPyConnection, window: list[tuple[_Item, Claimed]], early: list[Outcome],
                futures: list, started: float) -> None:
        outcomes = list(early)
        self.stats.failed += len(early)
        for f in futures:
            result = f.result()
            it = result.key
            if self.keep_send_seconds:
                self.stats.send_seconds.append(result.seconds)
            if result.status == "sent":
                self.stats.sent += 1
            else:
                self.stats.failed += 1
            outcomes.append(Outcome(it.planned.request_id, it.planned.to_address, result.status, result.message_id,
                                    it.redact(result.error)[:1000] if result.error else None, result.attempts))
        created = [c.created_at for _, c in window if c.created_at is not None]
        mark(conn, outcomes, since=min(created) if len(created) == len(window) else None)
        if self.keep_send_seconds:
            self.stats.record_seconds.extend([time.perf_counter() - started] * len(window))
