"""Batch ingestion of SES notifications: parse + verify, then apply and write set-wise.

`prepare` turns queue messages into normalised events, verified SNS control messages
(subscription confirmations) and quarantine rows; it needs no database. `commit` applies
a prepared batch in one DuckDB transaction: drops event_ids already stored (a redelivery
changes nothing), runs the status machine per message in event-time order, folds address
health, and writes every table with one set-wise statement each.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import duckdb
import pandas as pd

from pipelines.common.drain import QueueMessage
from pipelines.common.quarantine import Quarantined, quarantine
from pipelines.email.ses.address_health import AddressState, StatusChange, apply_effects
from pipelines.email.ses.ses_parse import ParseError, SesEvent, is_ses_payload, parse_ses
from pipelines.email.ses.sns_verify import SnsVerifier, VerificationError
from pipelines.email.ses.status_machine import step

SOURCE = "ses-notifications"
Confirm = Callable[[str, str], str]  # (topic_arn, token) -> subscription ARN


@dataclass(frozen=True)
class ControlMessage:
    sns_message_id: str
    sns_type: str
    topic_arn: str
    action: str                     # confirm (pending), confirmed, recorded
    subscription_arn: str | None
    received_at: datetime
    token: str | None = field(default=None, repr=False)  # only while pending; never stored


@dataclass
class Examined:
    """One queue message verified and parsed: its events and control messages, or the reason it is refused."""
    sqs_message_id: str
    events: list[SesEvent]
    controls: list[ControlMessage]
    reason: str | None


@dataclass
class Prepared:
    events: list[SesEvent] = field(default_factory=list)
    controls: list[ControlMessage] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    # sqs_message_id -> None when handled, else the quarantine reason
    outcomes: dict[str, str | None] = field(default_factory=dict)


@dataclass
class IngestResult:
    messages: int = 0
    events_new: int = 0
    events_duplicate: int = 0
    orphans: int = 0
    status_changes: int = 0
    unexpected_transitions: int = 0
    address_changes: int = 0
    controls: int = 0
    quarantined: int = 0

    def add(self, other: IngestResult) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Ingestor:
    def __init__(self, verifier: SnsVerifier, *, accept_raw: bool = False, confirm: Confirm | None = None,
                 source: str = SOURCE):
        self.verifier = verifier
        self.accept_raw = accept_raw
        self.confirm = confirm
        self.source = source

    # ---- parse + verify (no database, no network but the certificate fetch) ----
    def prepare(self, messages: Iterable[QueueMessage]) -> Prepared:
        messages = list(messages)
        return self.assemble(messages, [self.examine(m) for m in messages])

    def examine(self, msg: QueueMessage) -> Examined:
        """Verify and parse one message. Pure: safe to run in a worker process."""
        try:
            return self._examine(msg)
        except (VerificationError, ParseError) as exc:
            return Examined(msg.sqs_message_id, [], [], str(exc))

    def assemble(self, messages: list[QueueMessage], examined: list[Examined]) -> Prepared:
        """Merge per-message results in order; confirm allow-listed subscriptions (the one side effect)."""
        out = Prepared()
        for msg, ex in zip(messages, examined):
            reason = ex.reason
            controls = ex.controls
            if reason is None and controls and controls[0].action == "confirm":
                controls, reason = self._confirm(controls[0])
            if reason is not None:
                out.quarantined.append(Quarantined(self.source, msg.sqs_message_id, msg.body, reason))
                out.outcomes[msg.sqs_message_id] = reason
                continue
            out.events.extend(ex.events)
            out.controls.extend(controls)
            out.outcomes[msg.sqs_message_id] = None
        return out

    def _confirm(self, pending: ControlMessage) -> tuple[list[ControlMessage], str | None]:
        if self.confirm is None:
            return [], "SubscriptionConfirmation for an allow-listed topic, but no SNS client is configured to confirm it"
        try:
            arn = self.confirm(pending.topic_arn, pending.token or "")
        except Exception as exc:  # replayable from quarantine; the token stays valid for 3 days
            return [], f"SubscriptionConfirmation could not be confirmed: {type(exc).__name__}"
        return [replace(pending, action="confirmed", subscription_arn=arn, token=None)], None

    def _examine(self, msg: QueueMessage) -> Examined:
        try:
            body = json.loads(msg.body)
        except ValueError:
            raise ParseError("body is not JSON") from None
        if not isinstance(body, dict):
            raise ParseError("body is not a JSON object")
        if "Type" in body:
            return self._envelope(msg.sqs_message_id, body)
        if is_ses_payload(body):
            if not self.accept_raw:
                raise ParseError("raw SES payload (SNS raw delivery) refused: SES_ACCEPT_RAW is off")
            # Raw delivery carries no SNS id or signature: the body's hash is the idempotency key.
            digest = hashlib.sha256(msg.body.encode("utf-8")).hexdigest()[:32]
            return Examined(msg.sqs_message_id, parse_ses(body, f"raw-{digest}", datetime.now(timezone.utc)), [], None)
        raise ParseError("neither an SNS envelope nor an SES payload")

    def _envelope(self, sqs_id: str, env: dict) -> Examined:
        sns_type = env.get("Type")
        try:
            sns_time = self.verifier.verify(env)
        except VerificationError as exc:
            raise VerificationError(f"SNS {sns_type} refused: {exc}") from None
        sns_id = env.get("MessageId")
        if not isinstance(sns_id, str) or not sns_id:
            raise ParseError("SNS envelope lacks MessageId")
        if sns_type == "Notification":
            return Examined(sqs_id, parse_ses(env.get("Message"), sns_id, sns_time), [], None)  # type: ignore[arg-type]
        topic = env["TopicArn"]
        if sns_type == "SubscriptionConfirmation":
            return Examined(sqs_id, [], [ControlMessage(sns_id, sns_type, topic, "confirm", None, sns_time,
                                                        token=env["Token"])], None)
        # UnsubscribeConfirmation: nothing to do but record it
        return Examined(sqs_id, [], [ControlMessage(sns_id, sns_type, topic, "recorded", None, sns_time)], None)

    # ---- apply + write (one transaction) ----
    def commit(self, conn: duckdb.DuckDBPyConnection, prepared: Prepared, *, write_quarantine: bool = True,
               within: Callable[[duckdb.DuckDBPyConnection], None] | None = None) -> IngestResult:
        result = IngestResult(messages=len(prepared.outcomes))
        conn.execute("BEGIN TRANSACTION")
        try:
            apply_events(conn, prepared.events, result)
            if prepared.controls:
                _insert_controls(conn, prepared.controls)
                result.controls = len(prepared.controls)
            if write_quarantine and prepared.quarantined:
                result.quarantined = quarantine(conn, prepared.quarantined)
            if within is not None:
                within(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return result

    def process(self, conn: duckdb.DuckDBPyConnection, messages: Iterable[QueueMessage]) -> IngestResult:
        return self.commit(conn, self.prepare(messages))


def _frame(conn: duckdb.DuckDBPyConnection, name: str, data: dict) -> None:
    conn.register(name, pd.DataFrame(data))


def apply_events(conn: duckdb.DuckDBPyConnection, events: list[SesEvent], result: IngestResult) -> None:
    """Apply events inside the caller's transaction."""
    unique: dict[str, SesEvent] = {}
    for ev in events:
        unique.setdefault(ev.event_id, ev)
    result.events_duplicate += len(events) - len(unique)
    if not unique:
        return
    _frame(conn, "ses_batch_ids", {"event_id": list(unique), "message_id": [e.message_id for e in unique.values()]})
    stored = conn.execute(
        "SELECT b.event_id FROM ses_batch_ids b JOIN email_events e USING (event_id)").fetchall()
    for (event_id,) in stored:
        del unique[event_id]
    result.events_duplicate += len(stored)
    statuses: dict[str, str] = dict(conn.execute(
        "SELECT m.message_id, any_value(m.status) FROM email_messages m "
        "WHERE m.message_id IN (SELECT DISTINCT message_id FROM ses_batch_ids) GROUP BY m.message_id").fetchall())
    conn.unregister("ses_batch_ids")
    if not unique:
        return

    new = sorted(unique.values(), key=lambda e: (e.message_id, e.occurred_at))
    n = len(new)
    orphan = [False] * n
    before: list[str | None] = [None] * n
    after: list[str | None] = [None] * n
    status_updates: dict[str, tuple[str, datetime]] = {}
    address_ops: list[tuple[str, datetime, str, tuple[str, ...]]] = []
    for i, ev in enumerate(new):
        status = statuses.get(ev.message_id)
        if status is None:
            orphan[i] = True
            continue
        rule = step(status, ev.signal)
        before[i], after[i] = status, rule.next_status
        if rule.kind == "unexpected":
            result.unexpected_transitions += 1
        if rule.next_status != status:
            statuses[ev.message_id] = rule.next_status
            status_updates[ev.message_id] = (rule.next_status, ev.occurred_at)
        if ev.recipient and ev.signal is not None:
            address_ops.append((ev.recipient, ev.occurred_at, ev.event_id, rule.effects))

    _frame(conn, "ses_new_events", {
        "event_id": [e.event_id for e in new],
        "sns_message_id": [e.sns_message_id for e in new],
        "message_id": [e.message_id for e in new],
        "recipient": [e.recipient for e in new],
        "event_type": [e.event_type for e in new],
        "bounce_type": [e.bounce_type for e in new],
        "bounce_subtype": [e.bounce_subtype for e in new],
        "occurred_at": pd.to_datetime([e.occurred_at for e in new], utc=True),
        "orphan": orphan,
        "status_before": before,
        "status_after": after,
        "detail": [e.detail for e in new],
    })
    conn.execute(
        "INSERT INTO email_events (event_id, sns_message_id, message_id, recipient, event_type, bounce_type, "
        "bounce_subtype, occurred_at, orphan, status_before, status_after, detail) "
        "SELECT event_id, sns_message_id, message_id, recipient, event_type, bounce_type, bounce_subtype, "
        "occurred_at, orphan, status_before, status_after, detail FROM ses_new_events")
    conn.unregister("ses_new_events")
    result.events_new += n
    result.orphans += sum(orphan)

    if status_updates:
        _frame(conn, "ses_status_updates", {
            "message_id": list(status_updates),
            "status": [s for s, _ in status_updates.values()],
            "status_at": pd.to_datetime([t for _, t in status_updates.values()], utc=True),
        })
        conn.execute("UPDATE email_messages SET status = u.status, status_at = u.status_at "
                     "FROM ses_status_updates u WHERE email_messages.message_id = u.message_id")
        conn.unregister("ses_status_updates")
        result.status_changes += len(status_updates)

    if address_ops:
        changes = _apply_address_ops(conn, address_ops)
        result.address_changes += len(changes)


def _apply_address_ops(conn: duckdb.DuckDBPyConnection,
                       ops: list[tuple[str, datetime, str, tuple[str, ...]]]) -> list[StatusChange]:
    addresses = sorted({op[0] for op in ops})
    _frame(conn, "ses_addresses", {"address": addresses})
    states = {row[0]: AddressState(*row) for row in conn.execute(
        "SELECT a.address, a.verified, a.unverify_reason, a.transient_bounces, a.last_event_at "
        "FROM email_addresses a JOIN ses_addresses USING (address)").fetchall()}
    conn.unregister("ses_addresses")
    changes: list[StatusChange] = []
    for address, at, event_id, effects in sorted(ops, key=lambda op: (op[0], op[1])):
        state = states.get(address) or AddressState(address)
        states[address], change = apply_effects(state, effects, event_id, at)
        if change is not None:
            changes.append(change)
    touched = [states[a] for a in addresses]
    _frame(conn, "ses_address_rows", {
        "address": [s.address for s in touched],
        "verified": [s.verified for s in touched],
        "unverify_reason": [s.unverify_reason for s in touched],
        "transient_bounces": [s.transient_bounces for s in touched],
        "last_event_at": pd.to_datetime([s.last_event_at for s in touched], utc=True),
    })
    conn.execute(
        "INSERT INTO email_addresses (address, verified, unverify_reason, transient_bounces, last_event_at) "
        "SELECT address, verified, unverify_reason, transient_bounces, last_event_at FROM ses_address_rows "
        "ON CONFLICT (address) DO UPDATE SET verified = excluded.verified, "
        "unverify_reason = excluded.unverify_reason, transient_bounces = excluded.transient_bounces, "
        "last_event_at = excluded.last_event_at")
    conn.unregister("ses_address_rows")
    if changes:
        _frame(conn, "ses_address_changes", {
            "change_id": [c.change_id for c in changes],
            "address": [c.address for c in changes],
            "verified": [c.verified for c in changes],
            "reason": [c.reason for c in changes],
            "changed_at": pd.to_datetime([c.changed_at for c in changes], utc=True),
        })
        conn.execute(
            "INSERT INTO address_status_changes (change_id, address, verified, reason, changed_at) "
            "SELECT change_id, address, verified, reason, changed_at FROM ses_address_changes "
            "ON CONFLICT (change_id) DO NOTHING")
        conn.unregister("ses_address_changes")
    return changes


def _insert_controls(conn: duckdb.DuckDBPyConnection, controls: list[ControlMessage]) -> None:
    conn.executemany(
        "INSERT INTO sns_control_messages (sns_message_id, sns_type, topic_arn, action, subscription_arn, "
        "received_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sns_message_id) DO NOTHING",
        [(c.sns_message_id, c.sns_type, c.topic_arn, c.action, c.subscription_arn, c.received_at)
         for c in controls])
