"""Skip rules (as a table), outbox claims, idempotent reruns, the repeat window under two processes."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from pipelines.common.queue_message import QueueMessage
from pipelines.email.consumer import EmailRequestConsumer
from pipelines.email.builder import Builder
from pipelines.email.outbox import Outcome, Planned, claim, mark
from pipelines.email.sending import RetryPolicy, Sender
from pipelines.email.skip_rules import skip_reason
from tests.fakes import BatchDriver, RecordingTransport, sample_kinds, write_sample_templates
from pipelines.schema import database

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)


# address, verified, allow_unverified, suppressed, last sent same subject, window -> reason
SKIP_TABLE = [
    (None, True, False, False, None, None, "no-address"),
    ("", False, True, True, NOW, H, "no-address"),
    ("a@x.org", False, False, False, None, None, "unverified"),
    ("a@x.org", False, False, True, NOW, H, "unverified"),
    ("a@x.org", False, True, False, None, None, None),
    ("a@x.org", True, False, True, None, None, "suppressed"),
    ("a@x.org", False, True, True, NOW - 2 * H, H, "suppressed"),
    ("a@x.org", True, False, False, NOW - timedelta(minutes=59), H, "repeat-window"),
    ("a@x.org", True, False, False, NOW - timedelta(minutes=61), H, None),
    ("a@x.org", True, False, False, NOW - timedelta(minutes=1), None, None),
    ("a@x.org", True, False, False, None, H, None),
]


@pytest.mark.parametrize("address, verified, allow, suppressed, last, window, expected", SKIP_TABLE)
def test_skip_rules_table(address, verified, allow, suppressed, last, window, expected):
    assert skip_reason(address=address, verified=verified, allow_unverified=allow, suppressed=suppressed,
                       last_sent_same_subject=last, repeat_window=window, now=NOW) == expected


def planned(rid, to, subject="S", window=None, verified=True, allow=False, address=...):
    return Planned(request_id=rid, to_address=to, kind="k", from_address="f@x.org", subject=subject, user_id=None,
                   remote_ip=None, transport="t", address=to if address is ... else address, verified=verified,
                   allow_unverified=allow, repeat_window_s=window)


@pytest.fixture
def db(tmp_path):
    return database(str(tmp_path / "ledger.duckdb"))


def statuses(db):
    with db.connect() as c:
        return {(r, t): (s, why) for r, t, s, why in c.execute(
            "SELECT request_id, to_address, status, skip_reason FROM email_messages").fetchall()}


def test_claim_applies_ledger_rules_in_order(db):
    with db.connect() as c:
        c.execute("INSERT INTO email_addresses (address, verified, unverify_reason) VALUES "
                  "('bounced@x.org', false, 'hard-bounce'), ('ok@x.org', true, NULL)")
        out = claim(c, [
            planned("r1", "(no address #0)", address=None),
            planned("r1", "unv@x.org", verified=False),
            planned("r1", "Bounced@X.org"),                       # case-insensitive match
            planned("r1", "ok@x.org", window=3600),
            planned("r2", "ok@x.org", window=3600),               # same subject within the window
            planned("r3", "ok@x.org", subject="other", window=3600),
            planned("r4", "ok@x.org"),                            # no window for this kind
            planned("r1", "ok@x.org"),                            # same key twice in one claim
        ])
    assert [(c.status, c.skip_reason) for c in out] == [
        ("skipped", "no-address"), ("skipped", "unverified"), ("skipped", "suppressed"), ("pending", None),
        ("skipped", "repeat-window"), ("pending", None), ("pending", None), ("duplicate", None)]
    with db.connect() as c:
        again = claim(c, [planned("r1", "ok@x.org", window=3600), planned("r2", "ok@x.org", window=3600),
                          planned("r5", "ok@x.org", window=3600)])
    # pending (outcome unknown) is handed out again; skipped stays skipped; r5 is inside r1's window
    assert [(c.status, c.fresh) for c in again] == [("pending", False), ("skipped", False), ("skipped", True)]


def test_window_counts_only_sends(db):
    with db.connect() as c:
        claim(c, [planned("r1", "a@x.org", window=3600)])
        mark(c, [Outcome("r1", "a@x.org", "failed", None, "permanent: 550", 1)])
        assert [x.status for x in claim(c, [planned("r2", "a@x.org", window=3600)])] == ["pending"]
        mark(c, [Outcome("r2", "a@x.org", "sent", "m-2", None, 1)])
        assert [x.skip_reason for x in claim(c, [planned("r3", "a@x.org", window=3600)])] == ["repeat-window"]
        # an old send is outside the window
        c.execute("UPDATE email_messages SET sent_at = now() - INTERVAL '2 hours', created_at = now() - INTERVAL '2 hours' "
                  "WHERE request_id = 'r2'")
        assert [x.status for x in claim(c, [planned("r4", "a@x.org", window=3600)])] == ["pending"]


def test_mark_only_touches_pending(db):
    with db.connect() as c:
        claim(c, [planned("r1", "a@x.org")])
        assert mark(c, [Outcome("r1", "a@x.org", "sent", "m-1", None, 2)]) == 1
        assert mark(c, [Outcome("r1", "a@x.org", "failed", None, "late", 1)]) == 0
        row = c.execute("SELECT status, message_id, attempts, sent_at IS NOT NULL FROM email_messages").fetchone()
    assert row == ("sent", "m-1", 2, True)


# ---- the batch handler ------------------------------------------------------------------------

def msg(i, body):
    return QueueMessage(f"sqs-{i}", f"h-{i}", body if isinstance(body, str) else json.dumps(body))


def handler(db, templates, transport, **kw):
    kinds = sample_kinds()
    return BatchDriver(db.connect, EmailRequestConsumer(
        Builder(str(templates), kinds=kinds), Sender(transport, concurrency=4, policy=RetryPolicy(base_delay=0.001)),
        default_sender="noreply@mailroom.test", transport_name="recording", kinds=kinds, **kw))


def reset(i, to, token="tok-SECRET-1"):
    return msg(i, {"request_id": f"req-{i}", "kind": "password-reset",
                   "recipients": [{"email": to, "verified": True}],
                   "context": {"n_hours": 6, "token": token, "username": "u"}})


def test_same_batch_twice_sends_nothing_twice(db, tmp_path):
    write_sample_templates(tmp_path / "t")
    t = RecordingTransport()
    batch = [reset(i, f"user{i}@example.org") for i in range(30)] + [
        msg(99, {"request_id": "multi", "kind": "two-factor-added",
                 "recipients": [{"email": "a@example.org", "verified": True},
                                {"email": "b@example.org", "verified": False},
                                {"email": None, "verified": True},
                                {"email": "smtp-451-2@x", "verified": True},
                                {"email": "smtp-550@x", "verified": True}],
                 "context": {"method": "totp", "username": "u"}})]
    h = handler(db, tmp_path / "t", t)
    h.handle(batch)
    first = statuses(db)
    assert len(t.sent) == 32
    h2 = handler(db, tmp_path / "t", t)
    h2.handle(batch)
    h2.handle(list(reversed(batch)))
    assert len(t.sent) == 32, "a rerun sent again"
    assert statuses(db) == first
    assert h2.stats["sent"] == 0 and h2.stats["already_recorded"] == 2 * 35
    assert first[("multi", "b@example.org")] == ("skipped", "unverified")
    assert first[("multi", "(no address #2)")] == ("skipped", "no-address")
    assert first[("multi", "smtp-451-2@x")] == ("sent", None)
    assert first[("multi", "smtp-550@x")] == ("failed", None)


def test_pending_rows_from_a_crash_are_resent_once(db, tmp_path):
    write_sample_templates(tmp_path / "t")
    t = RecordingTransport()
    batch = [reset(i, f"user{i}@example.org") for i in range(5)]
    with db.connect() as c:   # a run that claimed and died before recording any outcome
        claim(c, [planned(f"req-{i}", f"user{i}@example.org") for i in range(3)])
    h = handler(db, tmp_path / "t", t)
    h.handle(batch)
    assert sorted(e.recipient for e in t.sent) == [f"user{i}@example.org" for i in range(5)]
    assert h.stats["resent_pending"] == 3
    h.handle(batch)
    assert len(t.sent) == 5


def test_inflight_is_at_most_two_windows(db, tmp_path):
    write_sample_templates(tmp_path / "t")
    t = RecordingTransport()
    h = handler(db, tmp_path / "t", t, inflight_window=4)
    windows = []
    original = h.consumer._submit

    def spy(window):
        # when window k+2 is handed out, window k's outcomes are committed: at most two in flight
        with db.connect() as c:
            windows.append((len(window), c.execute(
                "SELECT count(*) FROM email_messages WHERE status = 'sent'").fetchone()[0]))
        return original(window)

    h.consumer._submit = spy
    h.handle([reset(i, f"w{i}@example.org") for i in range(10)])
    assert windows == [(4, 0), (4, 0), (2, 4)]
    assert {s for s, _ in statuses(db).values()} == {"sent"}


# The repeat window under two concurrent processes, on both engines:
# tests/email/test_email_outbox_postgres.py::test_repeat_window_and_claims_hold_under_two_concurrent_processes
