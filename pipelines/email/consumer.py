"""The email-requests consumer (pipelines/common/consumer.py): parse, plan, claim, send, record.

`prepare` parses and plans each request (bad ones are refused: the kit keeps them in quarantine,
redacted, with the catalogue's sensitive variables among the secret field names). `commit`, inside the kit's transaction, claims outbox rows (the skip rules that need
the ledger) together with the batch's quarantine rows. `after_commit` sends what was claimed and
records each window's outcomes in its own transaction; only then are the SQS messages deleted.
Redelivered requests change nothing: rows already sent, skipped or failed are not claimed again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta

import duckdb
import jinja2

from pipelines.common.consumer import Prepared, QueueConsumer
from pipelines.common.counters import Counters
from pipelines.common.queue_message import QueueMessage
from pipelines.common.redaction import RedactionRules
from pipelines.common.stop import Stopped
from pipelines.email.builder import Builder
from pipelines.email.catalogue import KindSpec, all_sensitive_names, catalogue
from pipelines.email.outbox import Claimed, Outcome, Planned, claim, mark, release, stored_digests
from pipelines.email.redaction import Redactor, keep_remote_ip, redactor_for
from pipelines.email.request import BadRequest, EmailRequest, Recipient, parse_request
from pipelines.email.ledger import MessageIdsRecorded, MessageStatus as S
from pipelines.email.sending import UNSENT, Sender
from pipelines.store.store import Store
from resources.outgoing_email import OutgoingEmail

SOURCE = "email-requests"
REUSED = "request_id reused with different content"
# Orphan notifications of a window's messages arrive after its rows were claimed; the slack
# covers clocks and long transactions (DuckDB's now() is the transaction's start).
RELINK_SLACK = timedelta(minutes=10)


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
    sqs_message_id: str = ""


@dataclass
class PreparedRequests(Prepared):
    items: list[_Item] = field(default_factory=list)
    bodies: dict[str, str] = field(default_factory=dict)   # sqs_message_id -> body of each accepted message
    started: float = field(default_factory=time.perf_counter)
    to_send: list[tuple[_Item, Claimed]] = field(default_factory=list)   # set by commit


class EmailRequestConsumer(QueueConsumer):
    source = SOURCE

    def __init__(self, builder: Builder, sender: Sender, *, default_sender: str, transport_name: str,
                 kinds: dict[str, KindSpec] | None = None, inflight_window: int = 100,
                 keep_send_seconds: bool = False, on_recorded: MessageIdsRecorded | None = None):
        if not default_sender:
            raise ValueError("a default sender address is required (EMAIL_SENDER)")
        self.builder = builder
        self.sender = sender
        self.default_sender = default_sender
        self.transport_name = transport_name
        self.kinds = kinds if kinds is not None else catalogue()
        self.redaction = RedactionRules(secret_names=all_sensitive_names(self.kinds))
        self.inflight_window = max(1, inflight_window)
        self.keep_send_seconds = keep_send_seconds
        self.on_recorded = on_recorded   # told of each window's message ids, in its transaction
        self.send_seconds: list[float] = []     # per email, transport call incl. retries (benchmarks)
        self.record_seconds: list[float] = []   # per email, batch start -> outcome committed (benchmarks)
        self.metadata: dict[str, object] = {}   # facts about the run, added to the op's metadata

    def run_metadata(self) -> dict[str, object]:
        return dict(self.metadata)

    def close(self) -> None:
        self.sender.close()

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
                repeat_window_s=window_s, request_digest=request.digest)
            items.append(_Item(request, r, spec, redact, planned, subject))
        return items

    # -- the consumer --------------------------------------------------------------------------
    def prepare(self, messages: list[QueueMessage]) -> PreparedRequests:
        out = PreparedRequests()
        for msg in messages:
            try:
                items = self._plan(self._parse(msg))
            except BadRequest as exc:
                out.refuse(SOURCE, msg.sqs_message_id, msg.body, exc.reason)
            else:
                for it in items:
                    it.sqs_message_id = msg.sqs_message_id
                out.items.extend(items)
                out.bodies[msg.sqs_message_id] = msg.body
                out.accept(msg.sqs_message_id)
        return out

    def commit(self, conn: duckdb.DuckDBPyConnection, prepared: PreparedRequests) -> Counters:
        self._refuse_reused_ids(conn, prepared)
        counters = Counters(recipients=len(prepared.items), already_recorded=0, resent_pending=0)
        claims = claim(conn, [it.planned for it in prepared.items])
        prepared.to_send = []
        for it, c in zip(prepared.items, claims, strict=True):
            if c.status == S.PENDING:
                if not c.fresh:
                    counters["resent_pending"] += 1
                prepared.to_send.append((it, c))
            elif c.status == S.SKIPPED and c.fresh:
                counters["skipped_" + c.skip_reason.replace("-", "_")] += 1
            else:
                counters["already_recorded"] += 1
        return counters

    def _refuse_reused_ids(self, conn: duckdb.DuckDBPyConnection, prepared: PreparedRequests) -> None:
        """Quarantine requests whose request_id was used before for other content (kind,
        recipients or context), stored earlier or earlier in this batch: sending them could skip
        or duplicate emails the producer meant. A copy (same digest) passes: the claim makes it a
        no-op. Runs inside the kit's transaction, which then writes the quarantine rows."""
        known = stored_digests(conn, sorted({it.request.request_id for it in prepared.items}))
        refused: set[str] = set()
        requests: dict[str, EmailRequest] = {}   # sqs_message_id -> its request, in batch order
        for it in prepared.items:
            requests.setdefault(it.sqs_message_id, it.request)
        for sqs_id, request in requests.items():
            digests = known.setdefault(request.request_id, set())
            if digests and request.digest not in digests:
                refused.add(sqs_id)
                prepared.refuse(SOURCE, sqs_id, prepared.bodies[sqs_id], REUSED)
            else:
                digests.add(request.digest)
        if refused:
            prepared.items = [it for it in prepared.items if it.sqs_message_id not in refused]

    def request_stop(self) -> None:
        """The run is stopping: hand nothing more to the transport (the kit calls this on a stop request)."""
        self.sender.stop()

    def after_commit(self, store: Store, prepared: PreparedRequests) -> Counters:
        """Send what commit claimed. Window k+1 is handed to the senders before window k's outcomes
        are committed, so the rate limiter never idles on a commit; at most two windows are in flight.

        On a stop request: what the transport accepted (or refused) is recorded; rows claimed by this
        batch and never handed to the transport are released (deleted), and Stopped is raised so the
        batch stays on the queue; its redelivery claims them again and skips what was recorded."""
        counters = Counters(sent=0, failed=0)
        to_send, previous, submitted = prepared.to_send, None, 0
        for start in range(0, len(to_send), self.inflight_window):
            if self.sender.stopping:
                break
            current = self._submit(to_send[start:start + self.inflight_window])
            submitted = start + len(current[0])
            if previous is not None:
                counters.update(self._record(store, *previous, prepared.started))
            previous = current
        if previous is not None:
            counters.update(self._record(store, *previous, prepared.started))
        if submitted < len(to_send):   # stopped before these windows were handed out
            counters["released"] += self._release(store, to_send[submitted:])
        if counters["released"] or counters["left_pending"]:
            raise Stopped(counters)
        return counters

    def _error(self, it: _Item, error: str) -> str:
        """What email_messages.error keeps: the request's sensitive values and every secret masked."""
        return self.redaction.text(it.redact(error))[:1000]

    def _release(self, store: Store, claimed: list[tuple[_Item, Claimed]]) -> int:
        """Delete this batch's fresh claims that never reached the transport. A row already pending
        before this run (claimed by a run that died) stays pending: it may have been sent then."""
        keys = [(it.planned.request_id, it.planned.to_address) for it, c in claimed if c.fresh]
        if not keys:
            return 0
        with store.transaction() as conn:
            return release(conn, keys)

    def _submit(self, window: list[tuple[_Item, Claimed]]) -> tuple[list, list[Outcome], list]:
        early: list[Outcome] = []
        outgoing: list[tuple[object, OutgoingEmail]] = []
        for it, _ in window:
            sender = it.request.sender or self.default_sender
            try:
                built = self.builder.build(it.request, it.recipient, sender, subject=it.subject)
            except Exception as exc:  # noqa: BLE001 - a template bug fails this message, not the run
                early.append(Outcome(it.planned.request_id, it.planned.to_address, S.FAILED, None,
                                     self._error(it, f"render: {type(exc).__name__}: {exc}"), 0))
                continue
            outgoing.append((it, OutgoingEmail(sender=built.sender, recipient=built.recipient, raw=built.raw,
                                               kind=it.request.kind, message_id=built.message_id)))
        return window, early, self.sender.submit_all(outgoing)

    def _record(self, store: Store, window: list[tuple[_Item, Claimed]], early: list[Outcome],
                futures: list, started: float) -> Counters:
        outcomes = list(early)
        counters = Counters(failed=len(early))
        claims = {id(it): c for it, c in window}
        unsent: list[tuple[str, str]] = []   # stopped before the transport saw them
        for f in futures:
            result = f.result()
            it = result.key
            if self.keep_send_seconds:
                self.send_seconds.append(result.seconds)
            if result.status == UNSENT:
                if claims[id(it)].fresh:
                    unsent.append((it.planned.request_id, it.planned.to_address))
                else:
                    counters["left_pending"] += 1
                continue
            counters["sent" if result.status == S.SENT else "failed"] += 1
            outcomes.append(Outcome(it.planned.request_id, it.planned.to_address, result.status, result.message_id,
                                    self._error(it, result.error) if result.error else None, result.attempts,
                                    result.accepted_at))
        created = [c.created_at for _, c in window if c.created_at is not None]
        since = min(created) if len(created) == len(window) else None
        with store.transaction() as conn:
            mark(conn, outcomes, since=since)
            counters["released"] += release(conn, unsent)
            # A notification may have overtaken this record (stored as an orphan): the hook applies it now.
            if self.on_recorded is not None:
                counters.update(self.on_recorded(conn, [o.message_id for o in outcomes if o.message_id],
                                                 None if since is None else since - RELINK_SLACK))
        if self.keep_send_seconds:
            self.record_seconds.extend([time.perf_counter() - started] * len(window))
        return counters
