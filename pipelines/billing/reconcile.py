"""Reconciliation: compare Stripe (the source of truth) with the billing tables, repair, record.

Two modes, both diff-and-repair, both recording each difference in `billing_drift`:

* **full sweep**: list each reconciled type of the registry (object_types.RECONCILED, with its
  list parameters) at limit 100 (about N/100 calls per type), compare page by page with the
  tables, then delete
  rows whose object Stripe no longer lists. Memory stays flat: only one page of objects and
  the set of ids seen are held.
* **incremental** (the default): read the Events API from the cursor the previous run left,
  re-fetch only the objects those events touched, compare and repair them. When nothing
  changed this is one list call. It falls back to a full sweep when there is no cursor, or
  the cursor is older than Stripe's 30-day event retention (events may be gone).

Which types are reconciled, their API paths and which objects an event touches come from the
registry (object_types.py); what a row "is" (the compared columns, how to read, write and delete
it) from the `TableAdapter` (reconcile_tables.py), so this module is about Stripe calls and
bookkeeping only. Calls go through the caller's client, so its rate limiter and retries apply.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import duckdb
import stripe

from pipelines.billing.object_types import BY_NAME, RECONCILED, touched
from pipelines.billing.vocab import DriftAction, ReconcileMode
from pipelines.store.write import STR, TS, arrow, insert

EVENT_RETENTION_SECONDS = 30 * 24 * 3600
PAGE = 100
FLUSH_OBJECTS = 1000   # objects compared per DuckDB transaction in a full sweep

EVENTS_PATH = "/v1/events"


def get_json(client: stripe.StripeClient, path: str, **params: Any) -> dict[str, Any]:
    """GET through the pinned client (same version, limiter, retries, call counter and errors),
    kept as the decoded JSON: building the SDK's typed objects costs about 1 ms per object, ten
    times the HTTP call of a whole page, and reconciliation only reads fields."""
    return client.raw_request("get", path, **params).data


def slim(event: Mapping[str, Any]) -> dict[str, Any]:
    """What an incremental run keeps of an event: its id, time and the references it touches
    (a page of events carries full objects; a day of them need not sit in memory)."""
    return {"id": event["id"], "created": event["created"],
            "touched": touched(((event.get("data") or {}).get("object")) or {})}


class TableAdapter(Protocol):
    def expected(self, object_type: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """The compared columns as the tables should hold them for this Stripe object."""
    def rows(self, conn: duckdb.DuckDBPyConnection, object_type: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The compared columns of the rows with these ids."""
    def present_ids(self, conn: duckdb.DuckDBPyConnection, object_type: str, ids: list[str]) -> set[str]:
        """Which of these ids have a row that still stands for a live object."""
    def ids_created_before(self, conn: duckdb.DuckDBPyConnection, object_type: str, before: int) -> Iterable[str]:
        """Ids of live rows for objects created before `before` (epoch seconds)."""
    def set_mark(self, created: int, run_id: str) -> None:
        """Repairs from here on stand for Stripe's state as of `created` (its clock)."""
    def upsert(self, conn: duckdb.DuckDBPyConnection, object_type: str,
               objects: list[Mapping[str, Any]]) -> dict[str, str]:
        """Rewrite these objects' rows; returns {id: reason} for those it could not project."""
    def delete(self, conn: duckdb.DuckDBPyConnection, object_type: str, ids: list[str]) -> None: ...


@dataclass(frozen=True)
class Drift:
    object_type: str
    object_id: str
    field: str
    table_value: str | None
    stripe_value: str | None
    action: str
    reason: str | None = None


def canonical(value: Any) -> str | None:
    """One text form for both sides: datetimes as epoch seconds, bools lower-case, None as NULL."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return str(int(value.timestamp()))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def diff_object(object_type: str, object_id: str, table_row: Mapping[str, Any] | None,
                expected: Mapping[str, Any]) -> list[Drift]:
    """Differences between a row (None: missing) and what Stripe says it should be."""
    if table_row is None:
        return [Drift(object_type, object_id, "*", None, "present", DriftAction.INSERTED)]
    out = []
    for name, want in expected.items():
        have = canonical(table_row.get(name))
        if have != canonical(want):
            out.append(Drift(object_type, object_id, name, have, canonical(want), DriftAction.UPDATED))
    return out


@dataclass
class ReconcileReport:
    run_id: str
    mode: str
    calls: Counter = field(default_factory=Counter)      # Stripe calls by object type ("event" for pages)
    checked: Counter = field(default_factory=Counter)
    differences: Counter = field(default_factory=Counter)  # by object type
    unrepaired: list[Drift] = field(default_factory=list)
    events_read: int = 0
    fallback_reason: str | None = None

    def as_metadata(self) -> dict[str, Any]:
        md: dict[str, Any] = {"mode": str(self.mode), "stripe_calls": sum(self.calls.values()),
                              "objects_checked": sum(self.checked.values()),
                              "differences": sum(self.differences.values()),
                              "unrepaired": len(self.unrepaired), "events_read": self.events_read}
        md.update({f"calls_{k}": v for k, v in sorted(self.calls.items())})
        md.update({f"differences_{k}": v for k, v in sorted(self.differences.items())})
        if self.fallback_reason:
            md["fallback_reason"] = self.fallback_reason
        return md


Transaction = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


class Reconciler:
    """`transaction()` yields a DuckDB connection inside a transaction (the store's), committed on exit."""

    def __init__(self, client: stripe.StripeClient, transaction: Transaction, adapter: TableAdapter, *,
                 run_id: str | None = None, clock: Callable[[], float] = time.time,
                 log: Callable[[str], None] | None = None):
        self.client = client
        self.transaction = transaction
        self.adapter = adapter
        self.run_id = run_id or f"reconcile-{uuid.uuid4().hex[:12]}"
        self.clock = clock
        self.log = log or (lambda _m: None)

    # --- bookkeeping ----------------------------------------------------------------------

    def _record(self, conn: duckdb.DuckDBPyConnection, drifts: list[Drift], report: ReconcileReport) -> None:
        if not drifts:
            return
        now = datetime.now(UTC)
        insert(conn, "billing_drift", arrow(
            run_id=(STR, [self.run_id] * len(drifts)), object_type=(STR, [d.object_type for d in drifts]),
            object_id=(STR, [d.object_id for d in drifts]), field=(STR, [d.field for d in drifts]),
            table_value=(STR, [d.table_value for d in drifts]), stripe_value=(STR, [d.stripe_value for d in drifts]),
            action=(STR, [d.action for d in drifts]), reason=(STR, [d.reason for d in drifts]),
            detected_at=(TS, [now] * len(drifts))))
        for d in drifts:
            report.differences[d.object_type] += 1
            if d.action == DriftAction.UNREPAIRED:
                report.unrepaired.append(d)

    def last_cursor(self) -> tuple[int | None, list[str]]:
        with self.transaction() as conn:
            row = conn.execute("SELECT cursor_created, cursor_event_ids FROM billing_reconcile_runs"
                               " WHERE finished_at IS NOT NULL AND cursor_created IS NOT NULL"
                               " ORDER BY finished_at DESC LIMIT 1").fetchone()
        return (row[0], list(row[1] or [])) if row else (None, [])

    def _start(self, mode: str, started: datetime) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO billing_reconcile_runs (run_id, mode, started_at) VALUES (?, ?, ?)"
                         " ON CONFLICT (run_id) DO UPDATE SET mode = excluded.mode, started_at = excluded.started_at",
                         [self.run_id, mode, started])

    def _finish(self, report: ReconcileReport, cursor: int | None, cursor_ids: list[str]) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE billing_reconcile_runs SET finished_at = ?, cursor_created = ?, cursor_event_ids = ?,"
                         " api_calls = ?, objects_checked = ?, differences = ?, unrepaired = ? WHERE run_id = ?",
                         [datetime.now(UTC), cursor, cursor_ids, sum(report.calls.values()),
                          sum(report.checked.values()), sum(report.differences.values()),
                          len(report.unrepaired), self.run_id])

    # --- comparing and repairing a batch of objects ---------------------------------------

    def compare_and_repair(self, object_type: str, objects: list[Mapping[str, Any]], report: ReconcileReport) -> None:
        """Compare these Stripe objects with their rows and repair the rows, in one transaction."""
        if not objects:
            return
        expected: dict[str, dict[str, Any]] = {}
        bad: list[Drift] = []
        for obj in objects:
            try:
                expected[obj["id"]] = self.adapter.expected(object_type, obj)
            except (KeyError, TypeError, ValueError) as exc:  # a field missing or of an unexpected kind
                bad.append(Drift(object_type, str(obj.get("id")), "*", None, None, DriftAction.UNREPAIRED,
                                 f"cannot read the Stripe object: {exc!r}"[:300]))
        report.checked[object_type] += len(objects)
        with self.transaction() as conn:
            rows = self.adapter.rows(conn, object_type, list(expected))
            drifts = list(bad)
            dirty = []
            for obj in objects:
                oid = obj["id"]
                if oid not in expected:
                    continue
                found = diff_object(object_type, oid, rows.get(oid), expected[oid])
                if found:
                    drifts.extend(found)
                    dirty.append(obj)
            if dirty:
                refused = self.adapter.upsert(conn, object_type, dirty)
                if refused:
                    drifts = [replace(d, action=DriftAction.UNREPAIRED, reason=refused[d.object_id][:300])
                              if d.object_id in refused else d for d in drifts]
            self._record(conn, drifts, report)

    def _delete_missing(self, object_type: str, ids: list[str], report: ReconcileReport,
                        table_values: Mapping[str, str] | None = None) -> None:
        if not ids:
            return
        with self.transaction() as conn:
            self.adapter.delete(conn, object_type, ids)
            self._record(conn, [Drift(object_type, i, "*", "present", None, DriftAction.DELETED) for i in ids], report)

    # --- full sweep -----------------------------------------------------------------------

    def _pages(self, object_type: str, report: ReconcileReport,
               params: dict[str, Any] | None = None) -> Iterator[list]:
        params = dict(params) if params else {"limit": PAGE, **BY_NAME[object_type].list_params}
        while True:
            page = get_json(self.client, BY_NAME[object_type].path, **params)
            report.calls[object_type] += 1
            data = page["data"]
            if data:
                yield data
            if not page.get("has_more") or not data:
                return
            params["starting_after"] = data[-1]["id"]

    def full_sweep(self, report: ReconcileReport | None = None) -> ReconcileReport:
        report = report or ReconcileReport(self.run_id, ReconcileMode.FULL)
        report.mode = ReconcileMode.FULL
        self._start(ReconcileMode.FULL, datetime.now(UTC))
        # The next incremental run starts from Stripe's newest event as of now, in Stripe's own
        # clock (test clocks and the local Stripe can run ahead of ours): events after it are its
        # business, everything before it this sweep sees in the objects themselves.
        cursor, cursor_ids = self._newest_events(report)
        if cursor is None:
            cursor = int(self.clock()) - 1
        self.adapter.set_mark(cursor, self.run_id)
        sweep_started = cursor + 1
        for object_type in (t.name for t in RECONCILED):
            seen: set[str] = set()
            buffer: list = []
            for page in self._pages(object_type, report):
                buffer.extend(page)
                seen.update(o["id"] for o in page)
                if len(buffer) >= FLUSH_OBJECTS:
                    self.compare_and_repair(object_type, buffer, report)
                    buffer = []
            self.compare_and_repair(object_type, buffer, report)
            with self.transaction() as conn:
                # rows created after the sweep began may be objects the listing could not see yet
                extra = [i for i in self.adapter.ids_created_before(conn, object_type, sweep_started)
                         if i not in seen]
            self._delete_missing(object_type, extra, report)
            self.log(f"full sweep {object_type}: {len(seen)} listed, {report.calls[object_type]} calls, "
                     f"{report.differences[object_type]} differences")
        self._finish(report, cursor, cursor_ids)
        return report

    # --- incremental ----------------------------------------------------------------------

    def _newest_events(self, report: ReconcileReport) -> tuple[int | None, list[str]]:
        """Stripe's newest event time and the ids of every event at that second (one page, unless
        more than a page share it): the next incremental run skips exactly those."""
        params: dict[str, Any] = {"limit": PAGE}
        newest: int | None = None
        ids: list[str] = []
        while True:
            page = get_json(self.client, EVENTS_PATH, **params)
            report.calls["event"] += 1
            data = [(e["created"], e["id"]) for e in page["data"]]
            if not data:
                return newest, ids
            newest = data[0][0] if newest is None else newest
            ids.extend(i for c, i in data if c == newest)
            if data[-1][0] != newest or not page.get("has_more"):
                return newest, ids
            params["starting_after"] = data[-1][1]

    def _events_since(self, cursor: int, report: ReconcileReport) -> list[Mapping[str, Any]]:
        params: dict[str, Any] = {"limit": PAGE, "created": {"gte": cursor}}
        events: list = []
        while True:
            page = get_json(self.client, EVENTS_PATH, **params)
            report.calls["event"] += 1
            data = page["data"]
            events.extend(slim(e) for e in data)
            if not page.get("has_more") or not data:
                return events
            params["starting_after"] = data[-1]["id"]

    def _refetch(self, touched: list[tuple[str, str]], report: ReconcileReport) -> None:
        """Retrieve each object once, then compare and repair; rows of deleted objects go."""
        by_type: dict[str, list] = {}
        gone: dict[str, list[str]] = {}
        for object_type, oid in dict.fromkeys(touched):
            report.calls[object_type] += 1
            try:
                obj = get_json(self.client, f"{BY_NAME[object_type].path}/{oid}")
            except stripe.InvalidRequestError as exc:
                if exc.http_status == 404:
                    gone.setdefault(object_type, []).append(oid)
                    continue
                raise
            if obj.get("deleted"):
                gone.setdefault(object_type, []).append(oid)
            else:
                by_type.setdefault(object_type, []).append(obj)
        self._apply_all(by_type, gone, report)

    def _apply_all(self, by_type: Mapping[str, list], gone: Mapping[str, list[str]], report: ReconcileReport) -> None:
        for object_type in (t.name for t in RECONCILED):
            self.compare_and_repair(object_type, by_type.get(object_type, []), report)
        for object_type, ids in gone.items():
            with self.transaction() as conn:
                present = self.adapter.present_ids(conn, object_type, ids)
            self._delete_missing(object_type, [i for i in ids if i in present], report)

    def resync(self, ids_by_type: Mapping[str, Iterable[str]]) -> ReconcileReport:
        """Re-read these objects from Stripe and repair their rows (after an operator action)."""
        report = ReconcileReport(self.run_id, ReconcileMode.RESYNC)
        self._start(ReconcileMode.RESYNC, datetime.now(UTC))
        self.adapter.set_mark(int(self.clock()), self.run_id)
        self._refetch([(t, i) for t, ids in ids_by_type.items() for i in ids], report)
        self._finish(report, None, [])
        return report

    def resync_customer(self, customer_id: str) -> ReconcileReport:
        """A customer and everything it owns: one retrieve plus one list per owned type (paginated).
        An unknown id raises Stripe's 404 (InvalidRequestError) before anything is written."""
        report = ReconcileReport(self.run_id, ReconcileMode.RESYNC)
        customer = get_json(self.client, f"{BY_NAME['customer'].path}/{customer_id}")
        report.calls["customer"] += 1
        self._start(ReconcileMode.RESYNC, datetime.now(UTC))
        self.adapter.set_mark(int(self.clock()), self.run_id)
        by_type: dict[str, list] = {}
        gone: dict[str, list[str]] = {}
        if customer.get("deleted"):
            gone["customer"] = [customer_id]
        else:
            by_type["customer"] = [customer]
            for kind in (k for k in RECONCILED if k.name != "customer"):
                object_type = kind.name
                params: dict[str, Any] = {"limit": PAGE, "customer": customer_id, **kind.list_params}
                for page in self._pages(object_type, report, params):
                    by_type.setdefault(object_type, []).extend(page)
        self._apply_all(by_type, gone, report)
        self._finish(report, None, [])
        return report

    def incremental(self) -> ReconcileReport:
        report = ReconcileReport(self.run_id, ReconcileMode.INCREMENTAL)
        cursor, cursor_ids = self.last_cursor()
        now = self.clock()
        if cursor is None:
            report.fallback_reason = "no cursor: no earlier reconciliation"
            return self.full_sweep(report)
        if now - cursor > EVENT_RETENTION_SECONDS:
            report.fallback_reason = "cursor older than Stripe's 30-day event retention"
            return self.full_sweep(report)
        self._start(ReconcileMode.INCREMENTAL, datetime.now(UTC))
        events = self._events_since(cursor, report)
        newest = max((e["created"] for e in events), default=cursor)
        if newest - cursor > EVENT_RETENTION_SECONDS:
            # Stripe's clock (test clocks, the local Stripe's advanced time) has moved past the
            # retention window since the cursor: events in between may be gone.
            report.fallback_reason = "Stripe time moved more than 30 days past the cursor"
            return self.full_sweep(report)
        self.adapter.set_mark(newest, self.run_id)
        handled = set(cursor_ids)
        fresh = [e for e in events if e["id"] not in handled]
        report.events_read = len(fresh)
        touched: dict[tuple[str, str], None] = {}
        for event in sorted(fresh, key=lambda e: (e["created"], e["id"])):
            for key in event["touched"]:
                touched[key] = None
        self._refetch(list(touched), report)
        new_ids = [e["id"] for e in events if e["created"] == newest]
        if newest == cursor:
            new_ids = sorted(set(new_ids) | handled)
        self._finish(report, newest, new_ids)
        return report
