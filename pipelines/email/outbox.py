"""The outbox ledger (email_messages): claim rows before sending, record outcomes after.

`claim` runs the ledger-based skip rules and inserts the rows inside the caller's transaction
(the consumer kit's), so two runs cannot both pass the repeat-window check for the same
recipient and subject: the check and the insert commit together, and claims of the same
address run one at a time (DuckDB admits one writing process at a time; on PostgreSQL the claim
first locks its addresses, pipelines/store/locks.py).

Row lifecycle: pending -> sent | failed; or skipped at claim time. A row already sent,
skipped or failed is never claimed again; a pending row (claimed, outcome unknown after a
crash) is claimed again and resent: that in-flight window is the only duplicate risk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from pipelines.email.skip_rules import skip_reason
from pipelines.email.ledger import MessageStatus as S
from pipelines.store.dialect import dialect_of
from pipelines.store.locks import lock_keys
from pipelines.store.write import BIGINT, BOOL, INT, STR, TS, arrow, changed, insert, with_rows


@dataclass(frozen=True)
class Planned:
    request_id: str
    to_address: str           # the address, or a no-address placeholder
    kind: str
    from_address: str | None
    subject: str | None
    user_id: str | None
    remote_ip: str | None
    transport: str
    address: str | None       # None: the recipient has no address
    verified: bool
    allow_unverified: bool
    repeat_window_s: int | None
    request_digest: str | None = None   # EmailRequest.digest: what the request asked for

    @property
    def eligible(self) -> bool:
        """Passes the rules that need only the request (address, verification)."""
        return bool(self.address) and (self.verified or self.allow_unverified)


@dataclass(frozen=True)
class Claimed:
    planned: Planned
    status: str               # pending (send it), skipped, duplicate, or the status already recorded
    skip_reason: str | None
    fresh: bool               # inserted by this claim (False: the row existed)
    created_at: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    request_id: str
    to_address: str
    status: str               # sent or failed
    message_id: str | None
    error: str | None
    attempts: int
    accepted_at: datetime | None = None   # when the transport accepted it: sent_at (else the record's time)


def _planned_rows(planned: Sequence[Planned]):
    return arrow(
        idx=(BIGINT, range(len(planned))),
        request_id=(STR, [p.request_id for p in planned]),
        to_address=(STR, [p.to_address for p in planned]),
        addr_lower=(STR, [p.to_address.lower() for p in planned]),
        subject=(STR, [p.subject for p in planned]),
        window_s=(BIGINT, [p.repeat_window_s for p in planned]),
        eligible=(BOOL, [p.eligible for p in planned]),
    )


def stored_digests(conn: duckdb.DuckDBPyConnection, request_ids: Sequence[str]) -> dict[str, set[str]]:
    """The content digests already recorded for these request ids (rows from before digests
    were recorded have none and match anything)."""
    if not request_ids:
        return {}
    found: dict[str, set[str]] = {}
    for rid, digest in with_rows(
            conn, "SELECT DISTINCT request_id, request_digest FROM email_messages "
            "WHERE request_id IN (SELECT request_id FROM rows) AND request_digest IS NOT NULL",
            arrow(request_id=(STR, sorted(set(request_ids))))).fetchall():
        found.setdefault(rid, set()).add(digest)
    return found


def claim(conn: duckdb.DuckDBPyConnection, planned: Sequence[Planned]) -> list[Claimed]:
    if not planned:
        return []
    lock_keys(conn, "email-address", (p.to_address.lower() for p in planned))
    rows = _planned_rows(planned)
    now: datetime = conn.execute("SELECT now()").fetchone()[0]
    existing = {idx: (status, created) for idx, status, created in with_rows(
        conn, "SELECT p.idx, m.status, m.created_at FROM rows p JOIN email_messages m "
        "ON m.request_id = p.request_id AND m.to_address = p.to_address", rows).fetchall()}
    suppressed = {r[0] for r in with_rows(
        conn, "SELECT DISTINCT p.addr_lower FROM rows p JOIN email_addresses a "
        "ON lower(a.address) = p.addr_lower WHERE p.eligible AND NOT a.verified", rows).fetchall()}
    # Rows that count as "sent" for the repeat window: accepted, or claimed and possibly accepted.
    last_sent = dict(with_rows(
        conn, "SELECT p.idx, max(coalesce(m.sent_at, m.created_at)) FROM rows p JOIN email_messages m "
        "ON lower(m.to_address) = p.addr_lower AND m.subject = p.subject AND m.request_id <> p.request_id "
        "WHERE p.window_s IS NOT NULL AND p.eligible AND m.status NOT IN (?, ?) "
        f"AND coalesce(m.sent_at, m.created_at) > now() - {dialect_of(conn).seconds('p.window_s')} "
        "GROUP BY p.idx", rows, [S.SKIPPED, S.FAILED]).fetchall())

    results: list[Claimed] = []
    inserts: list[tuple[Planned, str, str | None]] = []
    in_batch: set[tuple[str, str]] = set()
    sent_in_batch: set[tuple[str, str | None]] = set()   # (address, subject) claimed for sending here
    for i, p in enumerate(planned):
        key = (p.request_id, p.to_address)
        if key in in_batch:   # the same request and recipient twice in one claim
            results.append(Claimed(p, "duplicate", None, False))
            continue
        in_batch.add(key)
        if i in existing:
            status, created = existing[i]
            if status == S.PENDING:   # claimed earlier, outcome unknown: send again
                sent_in_batch.add((p.to_address.lower(), p.subject))
            results.append(Claimed(p, status, None, False, created))
            continue
        window = timedelta(seconds=p.repeat_window_s) if p.repeat_window_s else None
        last = last_sent.get(i)
        if (p.to_address.lower(), p.subject) in sent_in_batch:
            last = now
        reason = skip_reason(
            address=p.address, verified=p.verified, allow_unverified=p.allow_unverified,
            suppressed=p.to_address.lower() in suppressed, last_sent_same_subject=last,
            repeat_window=window, now=now)
        status = S.SKIPPED if reason else S.PENDING
        if status == S.PENDING:
            sent_in_batch.add((p.to_address.lower(), p.subject))
        inserts.append((p, status, reason))
        results.append(Claimed(p, status, reason, True, now))

    if inserts:
        insert(conn, "email_messages", arrow(
            request_id=(STR, [p.request_id for p, _, _ in inserts]),
            to_address=(STR, [p.to_address for p, _, _ in inserts]),
            kind=(STR, [p.kind for p, _, _ in inserts]),
            from_address=(STR, [p.from_address for p, _, _ in inserts]),
            subject=(STR, [p.subject for p, _, _ in inserts]),
            status=(STR, [s for _, s, _ in inserts]),
            skip_reason=(STR, [r for _, _, r in inserts]),
            user_id=(STR, [p.user_id for p, _, _ in inserts]),
            remote_ip=(STR, [p.remote_ip for p, _, _ in inserts]),
            transport=(STR, [p.transport for p, _, _ in inserts]),
            request_digest=(STR, [p.request_digest for p, _, _ in inserts]),
            created_at=(TS, [now] * len(inserts)),
            status_at=(TS, [now] * len(inserts)),
    ))
    return results


def mark(conn: duckdb.DuckDBPyConnection, outcomes: Sequence[Outcome], since: datetime | None = None) -> int:
    """Record transport outcomes on pending rows; returns rows updated.

    `since`: no row in `outcomes` was created before it. The filter lets DuckDB skip older
    row groups instead of scanning the whole ledger for every window.
    """
    if not outcomes:
        return 0
    rows = arrow(
        request_id=(STR, [o.request_id for o in outcomes]), to_address=(STR, [o.to_address for o in outcomes]),
        status=(STR, [o.status for o in outcomes]), message_id=(STR, [o.message_id for o in outcomes]),
        error=(STR, [o.error for o in outcomes]), attempts=(INT, [o.attempts for o in outcomes]),
        accepted_at=(TS, [o.accepted_at for o in outcomes]))
    return changed(conn, with_rows(
        conn,
        "UPDATE email_messages SET status = o.status, message_id = o.message_id, error = o.error, "
        "attempts = email_messages.attempts + o.attempts, "
        "sent_at = CASE WHEN o.status = $sent THEN coalesce(o.accepted_at, now()) ELSE NULL END, "
        "status_at = CASE WHEN o.status = $sent THEN coalesce(o.accepted_at, now()) ELSE now() END "
        "FROM rows o WHERE email_messages.request_id = o.request_id AND email_messages.to_address = o.to_address "
        "AND email_messages.status = $pending" + (" AND email_messages.created_at >= $since" if since else ""),
        rows, {"sent": S.SENT, "pending": S.PENDING, **({"since": since} if since else {})}))


def release(conn: duckdb.DuckDBPyConnection, keys: Sequence[tuple[str, str]]) -> int:
    """Delete pending rows this run claimed but never handed to the transport (a stopped run):
    the request stays on the queue and its redelivery claims them afresh. Returns rows deleted."""
    if not keys:
        return 0
    rows = arrow(request_id=(STR, [k[0] for k in keys]), to_address=(STR, [k[1] for k in keys]))
    return changed(conn, with_rows(
        conn, "DELETE FROM email_messages USING rows r WHERE email_messages.request_id = r.request_id "
        "AND email_messages.to_address = r.to_address AND email_messages.status = $pending",
        rows, {"pending": S.PENDING}))
