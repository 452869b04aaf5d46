"""Applying SES notification events (the ses-notifications consumer's commit, consumer.py): drop
event_ids already stored (a redelivery changes nothing), run the status machine per message in
event-time order, fold address health, and write every table with one set-wise statement each.
Also re-linking orphan events once their send is recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from operator import itemgetter
from typing import TYPE_CHECKING

import pyarrow as pa

from pipelines.common.counters import Counters
from pipelines.email_delivery import event_batch
from pipelines.email_delivery.address_health import AddressState, StatusChange, apply_effects
from pipelines.email_delivery.examine import ControlMessage
from pipelines.email_delivery.phases import UNTIMED, PhaseTimer
from pipelines.email_delivery.ses_parse import signal_of
from pipelines.email.ledger import MessageStatus as S
from pipelines.email_delivery.status_machine import TABLE, UNEXPECTED, step
from pipelines.store.dialect import DUCKDB, dialect_of
from pipelines.store.locks import lock_keys
from pipelines.store.write import BOOL, INT, STR, TS, arrow, insert, with_rows, with_values

if TYPE_CHECKING:
    import duckdb

# Arrow's JSON type: DuckDB takes the column as JSON without re-validating what orjson wrote.
DETAIL = pa.json_(pa.string())

# Per-key serialization of concurrent writers (PostgreSQL; no-ops on DuckDB, whose one writer is alone):
# a message's status and its events' dedupe, and an address's health, are read, stepped and written
# by one transaction at a time. Every writer takes MESSAGE locks before ADDRESS locks (no deadlock).
# Their own namespaces: the outbox's repeat-window locks ("email-address") guard something else.
MESSAGE_LOCK, ADDRESS_LOCK = "ses-message", "ses-address"


def lock_messages_and_addresses(conn: duckdb.DuckDBPyConnection, message_ids: Iterable[str],
                                addresses: Iterable[str | None]) -> None:
    """Take the locks before reading what they guard. Under READ COMMITTED every later statement
    then sees what an earlier holder committed: its events (so they count as duplicates), the
    statuses and address health it wrote."""
    lock_keys(conn, MESSAGE_LOCK, message_ids)
    lock_keys(conn, ADDRESS_LOCK, (a for a in addresses if a))


def apply_events(conn: duckdb.DuckDBPyConnection, events: pa.Table, result: Counters,
                 dedupe_since: datetime | None = None, timer: PhaseTimer = UNTIMED) -> None:
    """Apply a batch of events (event_batch.SCHEMA) inside the caller's transaction.

    `dedupe_since`: earliest received_at a stored copy of any of these events can have (see
    SesNotificationConsumer.dedupe_window); None checks the whole ledger. `timer("write")` times each statement.
    """
    if not events.num_rows:
        return
    event_ids = events.column("event_id").to_pylist()
    first: dict[str, int] = {}  # event_id -> its first row: a redelivery within the batch counts once
    for i, event_id in enumerate(event_ids):
        first.setdefault(event_id, i)
    result["events_duplicate"] += events.num_rows - len(first)
    message_ids = events.column("message_id").to_pylist()
    duckdb_engine = dialect_of(conn) is DUCKDB
    with timer("write"):
        if not duckdb_engine:
            lock_messages_and_addresses(conn, message_ids, events.column("recipient").to_pylist())
        if dedupe_since is None:
            stored = with_values(conn, "SELECT event_id FROM rows WHERE event_id IN (SELECT event_id FROM email_events)",
                                 "event_id", list(first)).fetchall()
        else:
            stored = with_values(conn, "SELECT event_id FROM rows WHERE event_id IN "
                                 "(SELECT event_id FROM email_events WHERE received_at >= ?)",
                                 "event_id", list(first), [dedupe_since]).fetchall()
    for (event_id,) in stored:
        del first[event_id]
    result["events_duplicate"] += len(stored)
    if not first:
        return
    rows = list(first.values())
    new = events.take(pa.array(rows, type=pa.int64()))
    at = event_batch.micros(new, "occurred_at")
    recipients = new.column("recipient").to_pylist()
    signals = new.column("signal").to_pylist()
    steps = _step(conn, [(event_ids[i], message_ids[i], recipients[k], signals[k], at[k]) for k, i in enumerate(rows)],
                  result, timer)
    ses_new_events = (new.drop_columns(["signal", "detail"])
                      .append_column("orphan", pa.array([s is None for s in steps], type=BOOL))
                      .append_column("status_before", pa.array([s and s[0] for s in steps], type=STR))
                      .append_column("status_after", pa.array([s and s[1] for s in steps], type=STR))
                      .append_column("detail", pa.ExtensionArray.from_storage(DETAIL, new.column("detail").combine_chunks())))
    with timer("write"):
        # The locks make the check above final; the key (PostgreSQL only) stays the last word.
        inserted = insert(conn, "email_events", ses_new_events,
                          on_conflict="" if duckdb_engine else "(event_id) DO NOTHING")
    result["events_new"] += inserted
    result["events_duplicate"] += len(rows) - inserted
    result["orphans"] += sum(s is None for s in steps)


# (event_id, message_id, recipient, signal, occurred_at in microseconds since the epoch)
EventRef = tuple[str, str, "str | None", "str | None", int]


def _step(conn: duckdb.DuckDBPyConnection, refs: list[EventRef], result: Counters,
          timer: PhaseTimer = UNTIMED) -> list[tuple[str, str] | None]:
    """Run the status machine over events and write what it decides: message statuses and address
    health. Returns (status_before, status_after) per event, in `refs` order, or None for an
    orphan (no email_messages row has its message_id).

    Message status steps per message, in event time. Address health steps per recipient that an
    event names: each (message, recipient) has its own state, so when one notification bounces
    several recipients every one of them counts, whatever the message's status became."""
    if not refs:
        return []
    # On DuckDB row ids let the status update below find its rows without joining on message_id
    # again: both statements scan email_messages, but a rowid join reads no column (half the cost
    # at 2 M rows). Row ids are stable within the transaction. PostgreSQL has no stable row id (an
    # UPDATE moves a row): there the update finds its rows by the key, through its index.
    rows_by = _ROW_KEY[dialect_of(conn).name]
    statuses: dict[str, str] = {}
    row_ids: dict[str, list] = {}
    row_addresses: dict[str, list[str]] = {}
    # Flat rows, grouped here: DuckDB turns LIST columns into Python lists at twice the cost.
    with timer("write"):
        found = with_values(conn, f"SELECT message_id, status, {rows_by.select}, lower(to_address) FROM email_messages "
                            "WHERE message_id IN (SELECT message_id FROM rows)", "message_id",
                            sorted({r[1] for r in refs})).fetchall()
    for message_id, status, row_id, address in found:
        statuses[message_id] = status
        if message_id in row_ids:
            row_ids[message_id].append(row_id)
            row_addresses[message_id].append(address)
        else:
            row_ids[message_id] = [row_id]
            row_addresses[message_id] = [address]
    recipient_status = _recipient_statuses(conn, refs, statuses, row_addresses, timer)

    order = sorted(range(len(refs)), key=lambda k: (refs[k][1], refs[k][4]))  # per message, in event time
    out: list[tuple[str, str] | None] = [None] * len(refs)
    status_updates: dict[str, tuple[str, int]] = {}
    address_ops: list[tuple[str, int, str, tuple[str, ...]]] = []
    unexpected = 0
    rules = TABLE.get  # step() is this lookup for every known (status, signal); it runs twice per event
    for k in order:
        event_id, message_id, recipient, signal, at = refs[k]
        status = statuses.get(message_id)
        if status is None:
            continue
        rule = rules((status, signal)) or step(status, signal)
        next_status = rule.next_status
        out[k] = (status, next_status)
        if rule.kind == UNEXPECTED:
            unexpected += 1
        if next_status != status:
            statuses[message_id] = next_status
            status_updates[message_id] = (next_status, at)
        if recipient and signal is not None:
            key = (message_id, recipient)
            before = recipient_status[key]
            own = rules((before, signal)) or step(before, signal)
            recipient_status[key] = own.next_status
            address_ops.append((recipient, at, event_id, own.effects))
    if unexpected:
        result["unexpected_transitions"] += unexpected

    if status_updates:
        updates = [(row_id, s, t) for m, (s, t) in status_updates.items() for row_id in row_ids[m]]
        ses_status_updates = rows_by.table([u[0] for u in updates]).append_column(
            "status", pa.array([u[1] for u in updates], type=STR)).append_column(
            "status_at", event_batch.timestamps([u[2] for u in updates]))
        with timer("write"):
            with_rows(conn, "UPDATE email_messages SET status = u.status, status_at = u.status_at "
                            f"FROM rows u WHERE {rows_by.match}", ses_status_updates)
        result["status_changes"] += len(status_updates)

    if address_ops:
        changes = _apply_address_ops(conn, address_ops, timer)
        result["address_changes"] += len(changes)
    return out


def _recipient_statuses(conn: duckdb.DuckDBPyConnection, refs: list[EventRef], statuses: dict[str, str],
                        row_addresses: dict[str, list[str]], timer: PhaseTimer) -> dict[tuple[str, str], str]:
    """Each (message, recipient)'s status before these events, for address health.

    The common case, a message sent to one address whose notifications name only that address,
    is the message's own status. Otherwise (a notification naming several recipients, or one
    that is not the message's row) the recipient's earlier events are replayed from `sent`: one
    scan of email_events, needed only for such messages."""
    named: dict[str, set[str]] = {}
    for _, message_id, recipient, signal, _ in refs:
        if recipient and signal is not None and message_id in statuses:
            named.setdefault(message_id, set()).add(recipient)
    found: dict[tuple[str, str], str] = {}
    replay: list[tuple[str, str]] = []
    for message_id, recipients in named.items():
        if len(recipients) == 1 and row_addresses[message_id] == list(recipients):
            found[(message_id, next(iter(recipients)))] = statuses[message_id]
            continue
        start = statuses[message_id] if statuses[message_id] in S.NOT_ACCEPTED else S.SENT
        for recipient in recipients:
            found[(message_id, recipient)] = start
            replay.append((message_id, recipient))
    if replay:
        pairs = arrow(message_id=(STR, [p[0] for p in replay]), recipient=(STR, [p[1] for p in replay]))
        with timer("write"):
            earlier = with_rows(conn, "SELECT message_id, recipient, event_type, bounce_type FROM email_events e "
                                "WHERE NOT orphan AND EXISTS (SELECT 1 FROM rows r WHERE r.message_id = e.message_id "
                                "AND r.recipient = e.recipient) ORDER BY occurred_at, event_id", pairs).fetchall()
        for message_id, recipient, event_type, bounce_type in earlier:
            signal = signal_of(event_type, bounce_type)
            if signal is not None:
                key = (message_id, recipient)
                found[key] = step(found[key], signal).next_status
    return found


def relink_orphans(conn: duckdb.DuckDBPyConnection, message_ids: Iterable[str],
                   received_since: datetime | None = None) -> Counters:
    """Apply orphan events of these message ids, now that their email_messages rows know them.

    A notification can overtake its send's record: SES notifies within seconds, and the send path
    writes message_id only when it records the outcome. The events were stored as orphans; here
    they get the same status machine and address health as if they had arrived second, and stop
    being orphans. Call it inside the transaction that records the message ids.
    `received_since`: no orphan of these messages was received before it (they were sent after),
    so older row groups of email_events are skipped."""
    result = Counters()
    ids = sorted({m for m in message_ids if m})
    if not ids:
        return result
    # Before reading the orphans: an ingest that holds a message's lock may be storing one of them.
    lock_keys(conn, MESSAGE_LOCK, ids)
    sql = (f"SELECT event_id, message_id, recipient, event_type, bounce_type, {dialect_of(conn).epoch_us('occurred_at')} "
           "FROM email_events WHERE orphan AND message_id IN (SELECT message_id FROM rows)")
    found = with_values(conn, sql + (" AND received_at >= ?" if received_since is not None else ""),
                        "message_id", ids, [received_since] if received_since is not None else []).fetchall()
    if not found:
        return result
    lock_keys(conn, ADDRESS_LOCK, (r[2] for r in found if r[2]))
    refs = [(event_id, message_id, recipient, signal_of(event_type, bounce_type), at)
            for event_id, message_id, recipient, event_type, bounce_type, at in found]
    steps = _step(conn, refs, result)
    linked = [(ref[0], st[0], st[1]) for ref, st in zip(refs, steps) if st is not None]
    if linked:
        with_rows(conn, "UPDATE email_events SET orphan = false, status_before = r.status_before, "
                        "status_after = r.status_after FROM rows r "
                        "WHERE email_events.orphan AND email_events.event_id = r.event_id",
                  arrow(event_id=(STR, [x[0] for x in linked]), status_before=(STR, [x[1] for x in linked]),
                        status_after=(STR, [x[2] for x in linked])))
    result["orphans_relinked"] += len(linked)
    return result


def _apply_address_ops(conn: duckdb.DuckDBPyConnection, ops: list[tuple[str, int, str, tuple[str, ...]]],
                       timer: PhaseTimer = UNTIMED) -> list[StatusChange]:
    """Fold address effects in event time. Instants are microseconds since the epoch here."""
    addresses = sorted({op[0] for op in ops})
    with timer("write"):
        stored = with_values(conn, "SELECT address, verified, unverify_reason, transient_bounces, "
                             f"{dialect_of(conn).epoch_us('last_event_at')} FROM email_addresses "
                             "WHERE address IN (SELECT address FROM rows)", "address", addresses).fetchall()
    states = {row[0]: AddressState(*row) for row in stored}
    known = set(states)
    changes: list[StatusChange] = []
    for address, at, event_id, effects in sorted(ops, key=itemgetter(0, 1)):
        state = states.get(address) or AddressState(address)
        states[address], change = apply_effects(state, effects, event_id, at)
        if change is not None:
            changes.append(change)
    touched = [states[a] for a in addresses]
    ses_address_rows = arrow(
        address=(STR, addresses),
        known=(BOOL, [a in known for a in addresses]),
        verified=(BOOL, [s.verified for s in touched]),
        unverify_reason=(STR, [s.unverify_reason for s in touched]),
        transient_bounces=(INT, [s.transient_bounces for s in touched]),
        last_event_at=event_batch.timestamps([s.last_event_at for s in touched]))
    columns = ["address", "verified", "unverify_reason", "transient_bounces", "last_event_at"]
    with timer("write"):
        if dialect_of(conn) is DUCKDB:
            # Rows read above are updated and the others inserted: cheaper than an upsert's conflict check.
            with_rows(conn, "UPDATE email_addresses SET verified = r.verified, unverify_reason = r.unverify_reason, "
                            "transient_bounces = r.transient_bounces, last_event_at = r.last_event_at "
                            "FROM rows r WHERE r.known AND email_addresses.address = r.address", ses_address_rows)
            insert(conn, "email_addresses", ses_address_rows, where="NOT known", columns=columns)
        else:
            # One statement (one COPY) instead of two; the address locks make the values final.
            insert(conn, "email_addresses", ses_address_rows, columns=columns, on_conflict=(
                "(address) DO UPDATE SET verified = excluded.verified, unverify_reason = excluded.unverify_reason, "
                "transient_bounces = excluded.transient_bounces, last_event_at = excluded.last_event_at"))
    if changes:
        ses_address_changes = arrow(
            change_id=(STR, [c.change_id for c in changes]),
            address=(STR, [c.address for c in changes]),
            verified=(BOOL, [c.verified for c in changes]),
            reason=(STR, [c.reason for c in changes]),
            changed_at=event_batch.timestamps([c.changed_at for c in changes]))
        with timer("write"):
            insert(conn, "address_status_changes", ses_address_changes, on_conflict="(change_id) DO NOTHING")
    return changes


class _RowKey:
    """How _step's status update finds the email_messages rows it read: what to select, the
    batch's columns, and the join condition."""

    def __init__(self, select: str, columns: dict[str, pa.DataType], match: str):
        self.select, self.columns, self.match = select, columns, match

    def table(self, keys: list) -> pa.Table:
        if len(self.columns) == 1:
            (name, type_), = self.columns.items()
            return arrow(**{name: (type_, keys)})
        return arrow(**{name: (type_, [k[i] for k in keys]) for i, (name, type_) in enumerate(self.columns.items())})


_ROW_KEY = {
    "duckdb": _RowKey("rowid", {"row_id": pa.int64()}, "email_messages.rowid = u.row_id"),
    "postgres": _RowKey("(request_id, to_address)", {"request_id": STR, "to_address": STR},
                        "email_messages.request_id = u.request_id AND email_messages.to_address = u.to_address"),
}


def insert_controls(conn: duckdb.DuckDBPyConnection, controls: list[ControlMessage]) -> None:
    insert(conn, "sns_control_messages", arrow(
        sns_message_id=(STR, [c.sns_message_id for c in controls]),
        sns_type=(STR, [c.sns_type for c in controls]),
        topic_arn=(STR, [c.topic_arn for c in controls]),
        action=(STR, [c.action for c in controls]),
        subscription_arn=(STR, [c.subscription_arn for c in controls]),
        received_at=(TS, [c.received_at for c in controls]),
    ), on_conflict="(sns_message_id) DO NOTHING")
