"""Address health follows every recipient a notification names, and a notification that overtakes
its send's record is applied once the record is written. Real DuckDB files, signed envelopes."""

from __future__ import annotations

import json

import duckdb
import pytest

from pipelines.common.queue_message import QueueMessage
from pipelines.common.sns.cert_store import CertStore
from pipelines.common.sns.verify import SnsVerifier
from pipelines.email.consumer import EmailRequestConsumer
from pipelines.email.builder import Builder
from pipelines.email.sending import RetryPolicy, Sender
from pipelines.email_delivery.consumer import SesNotificationConsumer
from pipelines.email_delivery.ingest import relink_orphans
from tests.fakes import BatchDriver, RecordingTransport, process, sample_kinds, write_sample_templates
from tests.email_delivery.ses_helpers import FIXTURES, T0, TOPIC, fixture_json, iso, ses_message, signed


def _payload(name: str) -> dict:
    value = fixture_json(name)
    return json.loads(value) if isinstance(value, str) else value


def _named(payload: dict) -> list[str]:
    obj = next((payload[k] for k in ("bounce", "complaint", "delivery", "deliveryDelay") if k in payload), {})
    items = obj.get("bouncedRecipients") or obj.get("complainedRecipients") or obj.get("recipients") or []
    return [(i["emailAddress"] if isinstance(i, dict) else i).lower() for i in items]


MULTI = [p.name for p in sorted(FIXTURES.glob("ses-*.json")) if len(_named(_payload(p.name))) > 1]


@pytest.fixture
def env(tmp_path, identity, db):
    ingestor = SesNotificationConsumer(SnsVerifier([TOPIC], CertStore(tmp_path / "certs")))
    count = iter(range(1_000_000))

    def ingest(*messages: str):
        with db.connect() as conn:
            return process(conn, ingestor, [QueueMessage(f"sqs-{next(count)}", "rh", signed(identity, m))
                                            for m in messages])

    return db, ingest


def ledger_row(db, message_id: str, to: str, status: str = "sent", request_id: str | None = None) -> None:
    with db.connect() as conn:
        conn.execute("INSERT INTO email_messages (request_id, to_address, kind, message_id, status, attempts, sent_at) "
                     "VALUES (?, ?, 'password-reset', ?, ?, 1, now())",
                     [request_id or f"req-{message_id}-{to}", to, message_id, status])


def addresses(db) -> dict[str, tuple]:
    with db.connect() as conn:
        return {r[0]: r[1:] for r in conn.execute(
            "SELECT address, verified, unverify_reason, transient_bounces FROM email_addresses").fetchall()}


def changes(db) -> list[tuple]:
    with db.connect() as conn:
        return sorted(conn.execute("SELECT address, verified, reason FROM address_status_changes").fetchall())


def test_there_is_a_multi_recipient_sample():
    assert "ses-notification_bounce_permanent_general_no-dsn.awsdocs.json" in MULTI


@pytest.mark.parametrize("name", MULTI)
def test_every_recipient_of_a_multi_recipient_sample_counts(env, name):
    db, ingest = env
    payload = _payload(name)
    named = _named(payload)
    ledger_row(db, payload["mail"]["messageId"], named[0])      # the row knows one of them
    result = ingest(json.dumps(payload))
    assert result["events_new"] == len(named) and result["orphans"] == 0
    bounce = payload.get("bounce", {})
    if bounce.get("bounceType") == "Permanent" or "complaint" in payload:
        reason = "hard-bounce" if bounce else "spam-complaint"
        assert {a: addresses(db)[a] for a in named} == {a: (False, reason, 0) for a in named}
        assert changes(db) == [(a, False, reason) for a in sorted(named)]
    elif bounce:
        assert {a: addresses(db)[a][2] for a in named} == {a: 1 for a in named}


@pytest.mark.parametrize("kind, expected", [
    ("Bounce", (False, "hard-bounce", 0)),
    ("Complaint", (False, "spam-complaint", 0)),
])
def test_one_notification_naming_three_recipients(env, kind, expected):
    db, ingest = env
    people = ["a@example.org", "b@example.org", "c@example.org"]
    ledger_row(db, "m-multi", "a@example.org")
    ingest(ses_message(kind, "m-multi", people))
    assert {p: addresses(db)[p] for p in people} == {p: expected for p in people}
    assert [c[0] for c in changes(db)] == people


def test_soft_bounces_and_deliveries_count_for_every_recipient(env):
    db, ingest = env
    people = ["a@example.org", "b@example.org", "c@example.org"]
    ledger_row(db, "m-soft", "a@example.org")
    ingest(ses_message("Bounce", "m-soft", people, T0, bounce_type="Transient"))
    assert {p: addresses(db)[p][2] for p in people} == {p: 1 for p in people}
    ingest(ses_message("Delivery", "m-soft", people, T0.replace(minute=5)))
    assert {p: addresses(db)[p] for p in people} == {p: (True, None, 0) for p in people}


def test_a_later_notification_for_another_recipient_still_counts(env):
    """The message is already bounced (by a's bounce) when b's bounce arrives in another run."""
    db, ingest = env
    ledger_row(db, "m-later", "a@example.org")
    ingest(ses_message("Bounce", "m-later", ["a@example.org"]))
    with db.connect() as conn:
        assert conn.execute("SELECT status FROM email_messages").fetchone()[0] == "bounced"
    ingest(ses_message("Bounce", "m-later", ["b@example.org"], T0.replace(minute=1)))
    assert addresses(db)["b@example.org"] == (False, "hard-bounce", 0)


def test_each_recipient_keeps_its_own_history(env):
    """a was delivered, so its transient bounce is an out-of-office reply; b's counts."""
    db, ingest = env
    ledger_row(db, "m-own", "a@example.org")
    ingest(ses_message("Delivery", "m-own", ["a@example.org"]))
    ingest(ses_message("Bounce", "m-own", ["a@example.org", "b@example.org"], T0.replace(minute=1),
                       bounce_type="Transient"))
    assert addresses(db)["a@example.org"] == (True, None, 0)
    assert addresses(db)["b@example.org"] == (True, None, 1)


def test_two_rows_sharing_a_message_id(env):
    db, ingest = env
    ledger_row(db, "m-rows", "a@example.org", request_id="r-a")
    ledger_row(db, "m-rows", "b@example.org", request_id="r-b")
    ingest(ses_message("Bounce", "m-rows", ["a@example.org", "b@example.org"]))
    assert changes(db) == [("a@example.org", False, "hard-bounce"), ("b@example.org", False, "hard-bounce")]


# -- a notification that overtakes its send's record ---------------------------------------------

def _handler(tmp_path, db):
    write_sample_templates(tmp_path / "t")
    kinds = sample_kinds()
    return BatchDriver(db.connect, EmailRequestConsumer(
        Builder(str(tmp_path / "t"), kinds=kinds),
        Sender(RecordingTransport(), concurrency=1, policy=RetryPolicy(base_delay=0)),
        default_sender="noreply@mailroom.test", transport_name="rec", kinds=kinds, on_recorded=relink_orphans))


REQUEST = {"request_id": "order-1", "kind": "password-reset",
           "recipients": [{"email": "user@example.org", "verified": True}],
           "context": {"n_hours": 1, "token": "tok-order-1234", "username": "u"}}


def _final_state(db):
    with db.connect() as conn:
        message = conn.execute("SELECT status, message_id FROM email_messages").fetchall()
        events = conn.execute("SELECT event_id, orphan, status_before, status_after FROM email_events "
                              "ORDER BY occurred_at").fetchall()
    return message, events, addresses(db), changes(db)


@pytest.mark.parametrize("order", ["notification-first", "send-first"])
def test_outcome_does_not_depend_on_the_order_of_the_two_commits(env, tmp_path, order):
    db, ingest = env
    handler = _handler(tmp_path, db)    # RecordingTransport: the first message id it returns is rec-1
    notifications = [ses_message("Delivery", "rec-1", ["user@example.org"], T0),
                     ses_message("Bounce", "rec-1", ["user@example.org"], T0.replace(minute=1))]
    if order == "notification-first":
        result = ingest(*notifications)
        assert result["orphans"] == 2 and addresses(db) == {}
        handler.handle([QueueMessage("sqs-req", "rh", json.dumps(REQUEST))])
    else:
        handler.handle([QueueMessage("sqs-req", "rh", json.dumps(REQUEST))])
        ingest(*notifications)
    message, events, addrs, chg = _final_state(db)
    assert message == [("bounced", "rec-1")]
    assert [e[1:] for e in events] == [(False, "sent", "delivered"), (False, "delivered", "bounced")]
    assert addrs == {"user@example.org": (False, "hard-bounce", 0)}
    assert chg == [("user@example.org", False, "hard-bounce")]


def test_relinking_leaves_other_orphans_alone(env, tmp_path):
    db, ingest = env
    ingest(ses_message("Bounce", "not-ours", ["x@example.org"]), ses_message("Bounce", "rec-1", ["user@example.org"]))
    _handler(tmp_path, db).handle([QueueMessage("sqs-req", "rh", json.dumps(REQUEST))])
    with db.connect() as conn:
        assert conn.execute("SELECT message_id, orphan FROM email_events ORDER BY 1").fetchall() == [
            ("not-ours", True), ("rec-1", False)]
    assert "x@example.org" not in addresses(db)


def test_iso_helper_is_what_ses_sends():
    assert iso(T0) == "2026-11-01T12:00:00.000Z"
    assert duckdb.__version__
