"""Stripe event ingestion: prepare (pure) and commit (one transaction), set-wise.

prepare: open each message (envelope.py), drop a second copy of an event within the batch,
apply the tenant filter, recognise the type, and project the payload (projections.py) when it is
in the pinned API version. Bad input is refused with its reason; nothing raises.

commit: drop events the ledger already has (a duplicate is a no-op; an event that was
quarantined is tried again), then per object decide which state wins:
- the newest event of the batch, by (created, id), when it is newer than the object's watermark:
  its payload is applied, the older ones of the batch are `stale`;
- re-retrieve the object from Stripe at the pinned version (dj-stripe's approach) and apply
  that, when the payload is in another API version, when a create/update event is older than
  the watermark (it arrived late), or when two events of the object share the newest second
  (Stripe's `created` has one-second resolution and ids are not ordered, so the payload alone
  cannot say which is newer);
- otherwise (an older event that is not a create/update) the event is `stale`.
Every table is then written with one statement, and the ledger records each event's outcome.

customer.deleted is final: its payload (the customer as it was when deleted) is applied whatever
the order, with deleted_at its time. It cascades: the customer's subscriptions that are not
already ended become `canceled`, canceled_at/ended_at the deletion time when unset; Stripe
cancels them itself, and their own customer.subscription.deleted events carry the exact values.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from pipelines.billing import writer
from pipelines.billing.envelope import KEPT_REDACTION, EnvelopeSettings, Refusal, StripeEvent, kept_body, open_message
from pipelines.billing.object_types import BY_EVENT, BY_NAME, is_handled, project, project_event
from pipelines.billing.projections import Projection, ProjectionError
from pipelines.billing.retrieve import RetrieveError, Retriever
from pipelines.billing.vocab import EventOutcome
from pipelines.common.consumer import Prepared
from pipelines.common.counters import Counters
from pipelines.common.queue_message import QueueMessage
from pipelines.store.dialect import DUCKDB, dialect_of
from pipelines.store.locks import lock_keys
from pipelines.store.write import with_rows
from resources.stripe_client import STRIPE_API_VERSION

if TYPE_CHECKING:
    import duckdb

SOURCE = "stripe-events"

@dataclass(frozen=True)
class IngestSettings:
    envelope: EnvelopeSettings
    billing_service: str | None = None   # events whose object names another are skipped
    domain: str | None = None
    api_version: str = STRIPE_API_VERSION


@dataclass
class Incoming:
    """An event that was opened and verified, on its way to the ledger."""
    sqs_message_id: str
    raw_body: str
    received_at: datetime
    event: StripeEvent
    outcome: EventOutcome | None = None   # decided in prepare (ignored-tenant, unknown-type, quarantined)
    projection: Projection | None = None  # of the payload, when it is in the pinned version
    note: str | None = None


@dataclass
class PreparedEvents(Prepared):
    events: list[Incoming] = field(default_factory=list)
    repeats: int = 0  # copies of an event already in the batch


def tenant_mismatch(obj: dict, billing_service: str | None, domain: str | None) -> str | None:
    """Warehouse's filter: skip only when the object's metadata names another service or domain."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return None
    for key, ours in (("billing_service", billing_service), ("domain", domain)):
        theirs = meta.get(key)
        if ours and theirs is not None and theirs != ours:
            return f"metadata {key} {str(theirs)[:100]!r} is not this one's ({ours!r})"
    return None


def _is_create_or_update(event_type: str) -> bool:
    return event_type.endswith((".created", ".updated"))


class StripeIngest:
    def __init__(self, settings: IngestSettings, retriever: Retriever | None = None, source: str = SOURCE):
        self.settings = settings
        self.retriever = retriever
        self.source = source

    # ---- prepare: no database, no network ----
    def prepare(self, messages: list[QueueMessage]) -> PreparedEvents:
        out = PreparedEvents()
        seen: set[str] = set()
        now = datetime.now(timezone.utc)
        for m in messages:
            received = m.received_at or now
            opened = open_message(m.body, m.attributes, self.settings.envelope, received)
            if isinstance(opened, Refusal):
                self._refuse(out, m, opened.reason)
                continue
            if opened.id in seen:  # the same event twice in one batch: the second is a no-op
                out.outcomes[m.sqs_message_id] = None
                out.repeats += 1
                continue
            seen.add(opened.id)
            inc = Incoming(m.sqs_message_id, kept_body(m.body, m.attributes), received, opened)
            try:
                self._classify(inc)
            except ProjectionError as exc:
                inc.outcome, inc.note = EventOutcome.QUARANTINED, f"{opened.type} {opened.id}: {exc}"
            except Exception as exc:  # a handler bug: keep the message, name the event
                inc.outcome = EventOutcome.QUARANTINED
                inc.note = f"{opened.type} {opened.id}: unexpected {type(exc).__name__} while projecting"
            if inc.outcome is EventOutcome.QUARANTINED:
                self._refuse(out, m, inc.note or "quarantined")
            else:
                out.outcomes[m.sqs_message_id] = None
            out.events.append(inc)
        return out

    def _refuse(self, out: PreparedEvents, m: QueueMessage, reason: str) -> None:
        out.refuse(self.source, m.sqs_message_id, kept_body(m.body, m.attributes), reason)

    def _classify(self, inc: Incoming) -> None:
        ev = inc.event
        other = tenant_mismatch(ev.object, self.settings.billing_service, self.settings.domain)
        if other:
            inc.outcome, inc.note = EventOutcome.IGNORED_TENANT, other
        elif not is_handled(ev.type):
            inc.outcome = EventOutcome.UNKNOWN_TYPE
        elif ev.object_type != BY_EVENT[ev.type].name:
            raise ProjectionError(f"carries a {ev.object_type!r} object, expected {BY_EVENT[ev.type].name!r}")
        elif ev.api_version == self.settings.api_version:
            inc.projection = project_event(ev.type, ev.object)

    # ---- commit: one transaction, opened by the caller ----
    def commit(self, conn: duckdb.DuckDBPyConnection, prepared: PreparedEvents) -> Counters:
        counts = Counters(duplicates=prepared.repeats)  # the kit counts messages and prepare's quarantine
        incoming = prepared.events
        if not incoming:
            return counts
        if dialect_of(conn) is not DUCKDB:   # DuckDB: one writer at a time, nothing to lock
            lock_keys(conn, OBJECT_LOCK, _objects_touched(incoming))
        fresh = self._drop_known(conn, incoming)
        counts["duplicates"] += len(incoming) - len(fresh)
        plan = _Batch()
        decided: list[Incoming] = []
        pending: dict[str, list[Incoming]] = defaultdict(list)
        for inc in fresh:
            if inc.outcome is None:
                pending[inc.event.object_id].append(inc)
            else:
                decided.append(inc)
        marks = _watermarks(conn, list(pending))
        for object_id, group in pending.items():
            self._decide(object_id, sorted(group, key=lambda i: (i.event.created, i.event.id)),
                         marks.get(object_id), plan, counts)
            decided.extend(group)
        self._write(conn, plan, counts)
        for i in decided:   # refused late: the kit writes (and counts) them with prepare's
            if i.outcome is EventOutcome.QUARANTINED and prepared.outcomes.get(i.sqs_message_id) is None:
                prepared.refuse(self.source, i.sqs_message_id, i.raw_body, i.note or "quarantined")
        _write_ledger(conn, decided, plan.re_retrieved)
        for inc in decided:  # quarantine rows are counted where they are written
            if inc.outcome is not EventOutcome.QUARANTINED:
                counts[str(inc.outcome.value)] += 1
        counts["events_new"] += len(decided)
        return counts

    def _drop_known(self, conn: duckdb.DuckDBPyConnection, incoming: list[Incoming]) -> list[Incoming]:
        batch_ids = writer.ids_table("event_id", (i.event.id for i in incoming))
        known = {r[0] for r in with_rows(
            conn, "SELECT e.event_id FROM stripe_events e JOIN rows b USING (event_id) "
            f"WHERE e.outcome <> '{EventOutcome.QUARANTINED}'", batch_ids).fetchall()}
        return [i for i in incoming if i.event.id not in known]

    def _decide(self, object_id: str, group: list[Incoming], mark: tuple[int, str] | None, plan: _Batch,
                counts: Counters) -> None:
        newest = group[-1]
        ev = newest.event
        for older in group[:-1]:
            older.outcome = EventOutcome.STALE
        key = (ev.created, ev.id)
        tie = any(i.event.created == ev.created for i in group[:-1]) or (
            mark is not None and mark[0] == ev.created and mark[1] != ev.id)
        late = mark is not None and key < mark and not tie
        foreign = ev.api_version != self.settings.api_version
        if ev.type == "customer.deleted" and newest.projection is not None:
            # nothing follows a deletion: its payload is the customer's final state, in any order
            plan.apply(newest, newest.projection, max(key, mark) if mark else key)
            return
        if late and not any(_is_create_or_update(i.event.type) for i in group):
            newest.outcome = EventOutcome.STALE
            return
        if not (late or tie or foreign):
            plan.apply(newest, newest.projection, key)
            return
        why = ("older than the newest event applied" if late else
               "in the same second as another event of the object" if tie else
               f"in API version {ev.api_version}, not {self.settings.api_version}")
        if self.retriever is None:
            if late:
                newest.outcome, newest.note = EventOutcome.STALE, f"{why}; no Stripe client to re-retrieve"
            elif not foreign and newest.projection is not None:
                plan.apply(newest, newest.projection, key, note=f"{why}; applied by id order (no Stripe client)")
            else:
                newest.outcome = EventOutcome.QUARANTINED
                newest.note = f"{ev.type} {ev.id}: {why}, and no Stripe client to re-retrieve it"
            return
        try:
            current = self.retriever(ev.object_type, object_id)
            counts["stripe_calls"] += 1
        except RetrieveError as exc:
            counts["stripe_calls"] += 1
            newest.outcome, newest.note = EventOutcome.QUARANTINED, f"{ev.type} {ev.id}: {why}; {exc}"
            return
        if current is None:
            newest.outcome = EventOutcome.QUARANTINED
            newest.note = f"{ev.type} {ev.id}: {why}; Stripe has no {ev.object_type} {object_id}"
            return
        try:
            projection = project_event(ev.type, current)
        except ProjectionError as exc:
            newest.outcome, newest.note = EventOutcome.QUARANTINED, f"{ev.type} {ev.id} (re-retrieved): {exc}"
            return
        counts["re_retrieved"] += 1
        plan.re_retrieved.add(ev.id)
        plan.apply(newest, projection, max(key, mark) if mark else key, note=f"re-retrieved: {why}",
                   retrieved=True)

    def _write(self, conn: duckdb.DuckDBPyConnection, plan: _Batch, counts: Counters) -> None:
        writer.write_rows(conn, plan)
        self._activate_checkout_subscriptions(conn, plan, counts)
        writer.write_consequences(conn, plan)

    def _activate_checkout_subscriptions(self, conn: duckdb.DuckDBPyConnection, plan: _Batch,
                                         counts: Counters) -> None:
        """Checkout completed before its subscription's own events arrived: fetch the subscription."""
        if not plan.needs_subscription:
            return
        missing = [r[0] for r in with_rows(
            conn, "SELECT w.subscription_id FROM rows w WHERE NOT EXISTS "
                  "(SELECT 1 FROM stripe_subscriptions s WHERE s.subscription_id = w.subscription_id)",
            writer.ids_table("subscription_id", plan.needs_subscription)).fetchall()]
        if not missing or self.retriever is None:
            return
        extra = writer.Plan()
        subscription = BY_NAME["subscription"]
        for sid in missing:
            inc, mark = plan.needs_subscription[sid]
            try:
                current = self.retriever(subscription.name, sid)
                counts["stripe_calls"] += 1
                if current is None:
                    continue
                extra.add(project(subscription, current), mark, sid, subscription.name, retrieved=True)
                counts["re_retrieved"] += 1
            except (RetrieveError, ProjectionError) as exc:
                inc.note = f"its subscription {sid} could not be fetched: {exc}"
        writer.write_rows(conn, extra)
        plan.marks.update(extra.marks)


@dataclass
class _Batch(writer.Plan):
    """A batch's plan, with what only the ingestion needs: each event's outcome, the Checkout
    sessions whose subscription may have to be fetched, and the events re-retrieved."""
    needs_subscription: dict[str, tuple[Incoming, tuple[int, str]]] = field(default_factory=dict)
    re_retrieved: set[str] = field(default_factory=set)

    def apply(self, inc: Incoming, p: Projection | None, mark: tuple[int, str], *, note: str | None = None,
              retrieved: bool = False) -> None:
        inc.outcome, inc.note = EventOutcome.APPLIED, note
        if p is None:
            return
        final = inc.event.type == "customer.deleted"   # its time dates the deletion
        self.add(p, mark, inc.event.object_id, inc.event.object_type, retrieved=retrieved,
                 deleted_at=inc.event.created if final else None)
        if p.needs_subscription:
            self.needs_subscription[p.needs_subscription] = (inc, mark)


OBJECT_LOCK = writer.OBJECT_LOCK
# Columns of projected rows that name another object the batch's writes read or change: a refund
# takes its charge's customer, a customer's deletion cancels its subscriptions, a Checkout session
# links a customer and fetches its subscription.
_RELATED = ("customer_id", "charge_id", "subscription_id")


def _objects_touched(incoming: list[Incoming]) -> set[str]:
    """Every object id a batch's events may read or write: their objects, and the objects their
    payloads name. On PostgreSQL the batch holds a lock on each (lock_keys: one fixed order, so two
    drains over overlapping objects take turns instead of deadlocking) from before it reads the
    ledger and the watermarks until it commits, so its decisions see every batch committed before
    it on those objects; on DuckDB, where one process writes at a time, this costs nothing."""
    keys: set[str] = set()
    for inc in incoming:
        keys.add(inc.event.object_id)
        p = inc.projection
        if p is None:
            continue
        for tables in (p.rows, p.merge_rows):
            for rows in tables.values():
                for r in rows:
                    keys.update(r[c] for c in _RELATED if r.get(c))
        keys.update(x for link in p.links for x in (link.customer_id, link.subscription_id) if x)
        if p.needs_subscription:
            keys.add(p.needs_subscription)
        if p.deleted_customer:
            keys.add(p.deleted_customer)
    keys.discard(None)
    return keys


def _watermarks(conn: duckdb.DuckDBPyConnection, object_ids: list[str]) -> dict[str, tuple[int, str]]:
    if not object_ids:
        return {}
    batch_objects = writer.ids_table("object_id", object_ids)
    return {oid: (int(created), eid) for oid, created, eid in with_rows(
        conn, f"SELECT w.object_id, {dialect_of(conn).epoch('w.event_created')}, w.event_id "
        "FROM stripe_object_watermarks w "
        "JOIN rows b USING (object_id)", batch_objects).fetchall()}


def _error(inc: Incoming) -> str | None:
    """stripe_events.error: the note without any value its body's redaction masks, or secret-shaped."""
    if inc.note is None:
        return None
    return KEPT_REDACTION.text(inc.note, KEPT_REDACTION.body(inc.raw_body).found, pairs=False)


def _write_ledger(conn: duckdb.DuckDBPyConnection, decided: list[Incoming], re_retrieved: set[str]) -> None:
    now = datetime.now(timezone.utc)
    rows = [{
        "event_id": i.event.id, "type": i.event.type, "created": i.event.created,
        "api_version": i.event.api_version, "livemode": i.event.livemode, "object_type": i.event.object_type,
        "object_id": i.event.object_id, "received_at": i.received_at, "processed_at": now,
        "outcome": i.outcome.value, "error": _error(i), "re_retrieved": i.event.id in re_retrieved,
        "delivery": i.event.delivery, "sqs_message_id": i.sqs_message_id,
    } for i in decided]
    writer.upsert(conn, "stripe_events", ("event_id",), rows)
