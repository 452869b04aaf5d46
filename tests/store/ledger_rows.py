"""Seeded ledger rows for the report and snapshot tests: the tables the reports read, with the
values their SQL distinguishes (every message status and skip reason, hard/soft bounces,
complaints, orphans, live and ended subscriptions, deleted and community organisations, every
payment kind) and the values a copy can get wrong (NULL beside "", quotes, commas, newlines,
non-ASCII text, nested JSON, microsecond timestamps, empty and NULL lists)."""

from __future__ import annotations

import datetime as dt
import json
import random
from typing import Any

import pyarrow as pa

from pipelines.store import write
from pipelines.store.write import BIGINT, BOOL, INT, STR, TS, arrow

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)
STATUSES = ["pending", "skipped", "failed", "sent", "delivered", "bounced", "soft-bounced", "complained"]
SKIP_REASONS = ["no_address", "unverified", "suppressed", "repeat_window"]
AWKWARD = ["", "plain", 'quote " inside', "comma, and ; semi", "line\nbreak", "tab\there", "naïve – ünïcode ✓",
           "\\backslash", "NULL", "{a,b}", "  padded  "]
LIST_JSON = ["[]", None]


def _ts(rng: random.Random, days: int = 20) -> dt.datetime:
    return NOW - dt.timedelta(seconds=rng.randrange(days * 86400), microseconds=rng.randrange(1_000_000))


def _maybe(rng: random.Random, value: Any, p: float = 0.3) -> Any:
    return None if rng.random() < p else value


def ledger_rows(seed: int = 7, messages: int = 400) -> dict[str, pa.Table]:
    rng = random.Random(seed)
    m = {k: [] for k in ("request_id", "to_address", "kind", "message_id", "subject", "status", "skip_reason",
                         "error", "attempts", "created_at", "sent_at")}
    for i in range(messages):
        status = rng.choice(STATUSES)
        created = _ts(rng)
        accepted = status not in ("pending", "skipped", "failed")
        m["request_id"].append(f"req-{i}")
        m["to_address"].append(f"user{i}@example.com")
        m["kind"].append(rng.choice(["welcome", "password-reset", "billing"]))
        m["message_id"].append(f"ses-{i}" if accepted or rng.random() < 0.1 else None)
        m["subject"].append(rng.choice(AWKWARD))
        m["status"].append(status)
        m["skip_reason"].append(rng.choice(SKIP_REASONS) if status == "skipped" else None)
        m["error"].append(rng.choice(AWKWARD) if status == "failed" else None)
        m["attempts"].append(rng.randrange(3))
        m["created_at"].append(created)
        m["sent_at"].append(_maybe(rng, created + dt.timedelta(seconds=rng.randrange(600))) if accepted else None)
    email_messages = arrow(request_id=(STR, m["request_id"]), to_address=(STR, m["to_address"]), kind=(STR, m["kind"]),
                           message_id=(STR, m["message_id"]), subject=(STR, m["subject"]), status=(STR, m["status"]),
                           skip_reason=(STR, m["skip_reason"]), error=(STR, m["error"]),
                           attempts=(INT, m["attempts"]), created_at=(TS, m["created_at"]), sent_at=(TS, m["sent_at"]))

    e = {k: [] for k in ("event_id", "sns_message_id", "message_id", "recipient", "event_type", "bounce_type",
                         "occurred_at", "received_at", "orphan", "detail")}
    sent_ids = [x for x in m["message_id"] if x]
    for i in range(messages * 2):
        kind = rng.choice(["Delivery", "Bounce", "Bounce", "Complaint", "Delivery"])
        e["event_id"].append(f"ev-{i}")
        e["sns_message_id"].append(f"sns-{i}")
        e["message_id"].append(rng.choice(sent_ids) if rng.random() < 0.9 else f"unknown-{i}")
        e["recipient"].append(_maybe(rng, f"user{i}@example.com"))
        e["event_type"].append(kind)
        e["bounce_type"].append(rng.choice(["Permanent", "Transient", "Undetermined"]) if kind == "Bounce" else None)
        occurred = _ts(rng)
        e["occurred_at"].append(_maybe(rng, occurred, 0.1))
        e["received_at"].append(occurred + dt.timedelta(seconds=1))
        e["orphan"].append(rng.random() < 0.1)
        e["detail"].append(_maybe(rng, json.dumps({"n": i, "text": rng.choice(AWKWARD), "nested": {"list": [1, "x", None]}})))
    email_events = arrow(event_id=(STR, e["event_id"]), sns_message_id=(STR, e["sns_message_id"]),
                         message_id=(STR, e["message_id"]), recipient=(STR, e["recipient"]),
                         event_type=(STR, e["event_type"]), bounce_type=(STR, e["bounce_type"]),
                         occurred_at=(TS, e["occurred_at"]), received_at=(TS, e["received_at"]),
                         orphan=(BOOL, e["orphan"]), detail=(STR, e["detail"]))

    orgs = [f"org-{i}" for i in range(60)]
    organizations = arrow(
        id=(STR, orgs), name=(STR, [f"Org {i} {rng.choice(AWKWARD)}" for i in range(60)]),
        type=(STR, [rng.choice(["company", "company", "community"]) for _ in orgs]),
        created=(TS, [_ts(rng, 90) for _ in orgs]),
        deleted_at=(TS, [_ts(rng, 5) if rng.random() < 0.15 else None for _ in orgs]),
        billing_email=(STR, [_maybe(rng, f"billing@{o}.test") for o in orgs]))

    subs = [f"sub-{i}" for i in range(80)]
    sub_status = [rng.choice(["active", "trialing", "past_due", "canceled", "incomplete", "unpaid"]) for _ in subs]
    created = [_ts(rng, 60) for _ in subs]
    stripe_subscriptions = arrow(
        subscription_id=(STR, subs), customer_id=(STR, [f"cus-{i % 50}" for i in range(80)]),
        organization_id=(STR, [_maybe(rng, rng.choice(orgs), 0.1) for _ in subs]), status=(STR, sub_status),
        quantity=(BIGINT, [rng.randrange(1, 9) for _ in subs]),
        cancel_at_period_end=(BOOL, [_maybe(rng, rng.random() < 0.3) for _ in subs]),
        canceled_at=(TS, [c + dt.timedelta(days=3) if s == "canceled" else None for s, c in zip(sub_status, created)]),
        ended_at=(TS, [_maybe(rng, c + dt.timedelta(days=4)) if s == "canceled" else None
                       for s, c in zip(sub_status, created)]),
        current_period_end=(TS, [c + dt.timedelta(days=30) for c in created]),
        created=(TS, created), updated_at=(TS, created))
    prices = ["price-m", "price-y", "price-w"]
    stripe_prices = arrow(
        price_id=(STR, prices), product_id=(STR, ["prod-1"] * 3), active=(BOOL, [True] * 3),
        currency=(STR, ["usd", "usd", "eur"]), unit_amount=(BIGINT, [500, 5000, 120]),
        recurring_interval=(STR, ["month", "year", "week"]), recurring_interval_count=(BIGINT, [1, None, 2]),
        deleted=(BOOL, [False] * 3), livemode=(BOOL, [False] * 3), updated_at=(TS, [NOW] * 3))
    items = [f"si-{i}" for i in range(100)]
    stripe_subscription_items = arrow(
        item_id=(STR, items), subscription_id=(STR, [rng.choice(subs) for _ in items]),
        price_id=(STR, [rng.choice(prices) for _ in items]), quantity=(BIGINT, [rng.randrange(1, 5) for _ in items]),
        updated_at=(TS, [NOW] * len(items)))
    pays = [f"pay-{i}" for i in range(120)]
    pay_kind = [rng.choice(["payment_intent", "payment_intent", "charge", "refund", "dispute"]) for _ in pays]
    stripe_payments = arrow(
        payment_id=(STR, pays), kind=(STR, pay_kind), amount=(BIGINT, [rng.randrange(100, 10000) for _ in pays]),
        currency=(STR, ["usd"] * len(pays)),
        status=(STR, [rng.choice(["succeeded", "requires_payment_method", "processing"]) for _ in pays]),
        failure_code=(STR, [_maybe(rng, "card_declined", 0.7) for _ in pays]),
        livemode=(BOOL, [False] * len(pays)), created=(TS, [_ts(rng, 30) for _ in pays]),
        updated_at=(TS, [NOW] * len(pays)))

    quarantine = arrow(
        quarantine_id=(STR, [f"q-{i}" for i in range(len(AWKWARD))]), source=(STR, ["ses"] * len(AWKWARD)),
        sqs_message_id=(STR, [None if i % 3 == 0 else "" if i % 3 == 1 else f"m{i}" for i in range(len(AWKWARD))]),
        raw_body=(STR, AWKWARD), reason=(STR, list(reversed(AWKWARD))),
        quarantined_at=(TS, [_ts(rng) for _ in AWKWARD]),
        replayed_at=(TS, [None] * len(AWKWARD)), replay_result=(STR, [None, ""] * (len(AWKWARD) // 2) + [None]))
    lists = [[], None, ["evt_1"], ["", "a,b", 'q"uote', "{x}", "naïve", "NULL", None]]
    billing_reconcile_runs = arrow(
        run_id=(STR, [f"run-{i}" for i in range(len(lists))]), mode=(STR, ["full", "incremental", "resync", "full"]),
        started_at=(TS, [NOW] * len(lists)), finished_at=(TS, [None, NOW, NOW, NOW]),
        cursor_created=(BIGINT, [None, 0, -1, 2**40]),
        cursor_event_ids=pa.array(lists, pa.list_(pa.string())),
        api_calls=(INT, [0, None, 3, 2**31 - 1]))
    return {"email_messages": email_messages, "email_events": email_events, "organizations": organizations,
            "stripe_subscriptions": stripe_subscriptions, "stripe_prices": stripe_prices,
            "stripe_subscription_items": stripe_subscription_items, "stripe_payments": stripe_payments,
            "quarantine": quarantine, "billing_reconcile_runs": billing_reconcile_runs}


def write_rows(store: Any, tables: dict[str, pa.Table]) -> None:
    """Insert every table's rows through the store (either engine), in one transaction. On
    PostgreSQL by COPY straight into the table (text into jsonb, as the ledgers' writers do)."""
    from pipelines.store.postgres import PostgresConnection, copy_into

    with store.transaction() as conn:
        for name, rows in tables.items():
            if isinstance(conn, PostgresConnection):
                copy_into(conn.raw, name, rows)
            else:
                write.insert(conn, name, rows)
