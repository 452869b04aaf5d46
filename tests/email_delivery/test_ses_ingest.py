"""Batch ingestion into a real DuckDB file: state machine, address health, duplicates,
out-of-order arrival, orphans, poison, control messages, idempotence."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from devstack.sns_signer import confirmation_envelope
from pipelines.common.queue_message import QueueMessage
from pipelines.common.sns.cert_store import CertStore
from pipelines.email_delivery.consumer import SesNotificationConsumer
from pipelines.common.sns.verify import SnsVerifier
from tests.fakes import process
from tests.email_delivery.ses_helpers import T0, TOPIC, ses_message, signed


@pytest.fixture
def confirmations():
    return []


# With an SNS age limit, duplicates are looked for among recently received events only; without
# one, in the whole ledger. Every ingest test runs both ways.
@pytest.fixture(params=[0, 3600], ids=["whole-ledger", "age-window"])
def ingestor(request, tmp_path, identity, confirmations):
    def confirm(topic, token):
        confirmations.append((topic, token))
        return f"{topic}:sub-1"

    verifier = SnsVerifier([TOPIC], CertStore(tmp_path / "certs"), max_age_seconds=request.param)
    return SesNotificationConsumer(verifier, confirm=confirm)


_counter = iter(range(10**9))


def qmsg(body: str) -> QueueMessage:
    n = next(_counter)
    return QueueMessage(f"sqs-{n}", f"rh-{n}", body)


def add_message(db, message_id: str, to: str, status: str = "sent", kind: str = "password-reset") -> None:
    with db.connect() as conn:
        conn.execute("INSERT INTO email_messages (request_id, to_address, kind, message_id, status, sent_at) "
                     "VALUES (?, ?, ?, ?, ?, now())", [f"req-{message_id}", to, kind, message_id, status])


def status_of(db, message_id):
    with db.connect() as conn:
        return conn.execute("SELECT status FROM email_messages WHERE message_id = ?", [message_id]).fetchone()[0]


def address(db, addr):
    with db.connect() as conn:
        return conn.execute("SELECT verified, unverify_reason, transient_bounces FROM email_addresses "
                            "WHERE address = ?", [addr]).fetchone()


def table(db, sql):
    with db.connect() as conn:
        return conn.execute(sql).fetchall()


def run(db, ingestor, bodies):
    with db.connect() as conn:
        return process(conn, ingestor, [b if isinstance(b, QueueMessage) else qmsg(b) for b in bodies])


@pytest.mark.parametrize("event_format", [False, True])
@pytest.mark.parametrize("version", ["1", "2"])
def test_lifecycle_delivery_then_complaint(db, ingestor, identity, version, event_format):
    add_message(db, "m1", "a@example.com")
    res = run(db, ingestor, [signed(identity, ses_message("Delivery", "m1", ["a@example.com"], event_format=event_format), version=version)])
    assert (res["events_new"], res["status_changes"], res["orphans"], res["quarantined"]) == (1, 1, 0, 0)
    assert status_of(db, "m1") == "delivered"
    assert address(db, "a@example.com") == (True, None, 0)
    run(db, ingestor, [signed(identity, ses_message("Complaint", "m1", ["a@example.com"], T0 + timedelta(minutes=1),
                                                    event_format=event_format), version=version)])
    assert status_of(db, "m1") == "complained"
    assert address(db, "a@example.com") == (False, "spam-complaint", 0)
    changes = table(db, "SELECT address, verified, reason FROM address_status_changes")
    assert changes == [("a@example.com", False, "spam-complaint")]
    events = table(db, "SELECT event_type, status_before, status_after, orphan FROM email_events ORDER BY occurred_at")
    assert events == [("Delivery", "sent", "delivered", False), ("Complaint", "delivered", "complained", False)]
    assert table(db, "SELECT status_at FROM email_messages")[0][0] == T0 + timedelta(minutes=1)


def test_hard_bounce_unverifies_and_soft_bounce_counts(db, ingestor, identity):
    add_message(db, "m1", "hard@example.com")
    add_message(db, "m2", "soft@example.com")
    run(db, ingestor, [
        signed(identity, ses_message("Bounce", "m1", ["hard@example.com"])),
        signed(identity, ses_message("Bounce", "m2", ["soft@example.com"], bounce_type="Transient")),
    ])
    assert (status_of(db, "m1"), status_of(db, "m2")) == ("bounced", "soft-bounced")
    assert address(db, "hard@example.com") == (False, "hard-bounce", 0)
    assert address(db, "soft@example.com") == (True, None, 1)


def test_six_soft_bounces_unverify_and_redelivery_never_counts_twice(db, ingestor, identity):
    bodies = []
    for i in range(6):
        add_message(db, f"s{i}", "flaky@example.com")
        bodies.append(signed(identity, ses_message("Bounce", f"s{i}", ["flaky@example.com"], T0 + timedelta(hours=i),
                                                   bounce_type="Transient")))
    run(db, ingestor, bodies[:5])
    # The same five SNS messages redelivered (new SQS ids), one at a time and in a batch.
    run(db, ingestor, bodies[:1])
    run(db, ingestor, bodies[:5] + bodies[:5])
    assert address(db, "flaky@example.com") == (True, None, 5)
    assert table(db, "SELECT count(*) FROM address_status_changes") == [(0,)]
    run(db, ingestor, bodies[5:])
    assert address(db, "flaky@example.com") == (False, "soft-bounce", 6)
    assert table(db, "SELECT reason FROM address_status_changes") == [("soft-bounce",)]


def test_duplicate_check_window_follows_the_age_limit(db, tmp_path, identity):
    add_message(db, "m1", "a@example.com")
    body = signed(identity, ses_message("Delivery", "m1", ["a@example.com"]), sns_id="sns-old")
    windowed = SesNotificationConsumer(SnsVerifier([TOPIC], CertStore(tmp_path / "certs"), max_age_seconds=3600))
    assert windowed.dedupe_window == timedelta(seconds=3600 + 900)
    assert run(db, windowed, [body])["events_new"] == 1
    assert run(db, windowed, [body])["events_duplicate"] == 1
    # Pretend the stored copy arrived three days ago: a copy that old can no longer pass the age
    # limit, so the windowed check does not look at it; the whole-ledger check (replay) does.
    with db.connect() as conn:
        conn.execute("UPDATE email_events SET received_at = now() - INTERVAL 3 DAY")
    replayed = QueueMessage("sqs-replayed", "", body, received_at=datetime.now(timezone.utc))
    assert run(db, windowed, [replayed])["events_duplicate"] == 1
    assert run(db, windowed, [body])["events_new"] == 1
    unlimited = SesNotificationConsumer(SnsVerifier([TOPIC], CertStore(tmp_path / "certs"), max_age_seconds=0))
    raw = SesNotificationConsumer(SnsVerifier([TOPIC], CertStore(tmp_path / "certs"), max_age_seconds=3600), accept_raw=True)
    assert unlimited.dedupe_window is None and raw.dedupe_window is None
    assert run(db, unlimited, [body])["events_duplicate"] == 1
    assert table(db, "SELECT count(*) FROM email_events") == [(2,)]


def test_delivery_resets_soft_bounce_count(db, ingestor, identity):
    for i in range(3):
        add_message(db, f"s{i}", "x@example.com")
    run(db, ingestor, [signed(identity, ses_message("Bounce", f"s{i}", ["x@example.com"], T0 + timedelta(minutes=i),
                                                    bounce_type="Transient")) for i in range(2)])
    assert address(db, "x@example.com")[2] == 2
    run(db, ingestor, [signed(identity, ses_message("Delivery", "s2", ["x@example.com"], T0 + timedelta(minutes=5)))])
    assert address(db, "x@example.com") == (True, None, 0)


def test_out_of_order_bounce_before_its_delivery(db, ingestor, identity):
    add_message(db, "m1", "a@example.com")
    bounce = signed(identity, ses_message("Bounce", "m1", ["a@example.com"], T0 + timedelta(minutes=2)))
    delivery = signed(identity, ses_message("Delivery", "m1", ["a@example.com"], T0))
    run(db, ingestor, [bounce])
    run(db, ingestor, [delivery])
    # Warehouse's rule: Bounced + Delivery -> Delivered, the address stays unverified.
    assert status_of(db, "m1") == "delivered"
    assert address(db, "a@example.com") == (False, "hard-bounce", 0)


def test_within_one_batch_events_apply_in_event_time_order(db, ingestor, identity):
    add_message(db, "m1", "a@example.com")
    complaint = signed(identity, ses_message("Complaint", "m1", ["a@example.com"], T0 + timedelta(minutes=3)))
    delivery = signed(identity, ses_message("Delivery", "m1", ["a@example.com"], T0))
    run(db, ingestor, [complaint, delivery])
    assert status_of(db, "m1") == "complained"
    assert table(db, "SELECT event_type, status_before, status_after FROM email_events ORDER BY occurred_at") == [
        ("Delivery", "sent", "delivered"), ("Complaint", "delivered", "complained")]


def test_status_update_touches_exactly_the_rows_of_its_messages(db, ingestor, identity):
    # The update finds its rows by rowid: after deletes (cleanup) and with a message id on two
    # rows, it must still change those rows and no other.
    for i in range(1, 6):
        add_message(db, f"m{i}", f"u{i}@example.com")
    add_message(db, "m5", "u5-again@example.com")
    with db.connect() as conn:
        conn.execute("DELETE FROM email_messages WHERE message_id IN ('m1', 'm2')")
        conn.execute("CHECKPOINT")
    run(db, ingestor, [signed(identity, ses_message("Delivery", "m3", ["u3@example.com"])),
                       signed(identity, ses_message("Bounce", "m5", ["u5@example.com"]))])
    assert table(db, "SELECT message_id, to_address, status FROM email_messages ORDER BY 1, 2") == [
        ("m3", "u3@example.com", "delivered"), ("m4", "u4@example.com", "sent"),
        ("m5", "u5-again@example.com", "bounced"), ("m5", "u5@example.com", "bounced")]


def test_ooto_after_delivery_is_recorded_and_keeps_status(db, ingestor, identity):
    add_message(db, "m1", "a@example.com")
    run(db, ingestor, [signed(identity, ses_message("Delivery", "m1", ["a@example.com"]))])
    res = run(db, ingestor, [signed(identity, ses_message("Bounce", "m1", ["a@example.com"], T0 + timedelta(minutes=1),
                                                          bounce_type="Transient"))])
    assert (res["events_new"], res["status_changes"]) == (1, 0)
    assert status_of(db, "m1") == "delivered"
    assert address(db, "a@example.com") == (True, None, 0)


def test_record_only_events_keep_status_and_orphans_are_kept(db, ingestor, identity):
    add_message(db, "m1", "a@example.com")
    res = run(db, ingestor, [
        signed(identity, ses_message("Open", "m1", ["a@example.com"], event_format=True)),
        signed(identity, ses_message("Bounce", "unknown-id", ["z@example.com"])),
    ])
    assert (res["events_new"], res["orphans"], res["status_changes"]) == (2, 1, 0)
    assert status_of(db, "m1") == "sent"
    assert table(db, "SELECT message_id, event_type, orphan, status_before FROM email_events ORDER BY message_id") == [
        ("m1", "Open", False, "sent"), ("unknown-id", "Bounce", True, None)]
    # An orphan does not touch address health: the message was not ours.
    assert address(db, "z@example.com") is None


def test_fan_out_per_recipient(db, ingestor, identity):
    add_message(db, "m1", "a@example.com")
    body = signed(identity, ses_message("Bounce", "m1", ["a@example.com", "b@example.com"]), sns_id="sns-fan")
    res = run(db, ingestor, [body])
    assert res["events_new"] == 2
    assert table(db, "SELECT event_id FROM email_events ORDER BY 1") == [("sns-fan:a@example.com",),
                                                                       ("sns-fan:b@example.com",)]


def test_running_twice_changes_nothing(db, ingestor, identity):
    add_message(db, "m1", "a@example.com")
    add_message(db, "m2", "b@example.com")
    bodies = [signed(identity, ses_message("Delivery", "m1", ["a@example.com"])),
              signed(identity, ses_message("Bounce", "m2", ["b@example.com"])),
              signed(identity, ses_message("Bounce", "orphan", ["c@example.com"])),
              "poison"]
    snapshot_sql = ["SELECT * FROM email_messages ORDER BY request_id", "SELECT * EXCLUDE (received_at) FROM email_events ORDER BY event_id",
                    "SELECT * FROM email_addresses ORDER BY address", "SELECT * FROM address_status_changes ORDER BY change_id",
                    "SELECT quarantine_id, reason FROM quarantine ORDER BY 1"]
    messages = [qmsg(b) for b in bodies]
    run(db, ingestor, messages)
    first = [table(db, s) for s in snapshot_sql]
    res = run(db, ingestor, messages)
    assert [table(db, s) for s in snapshot_sql] == first
    assert (res["events_new"], res["events_duplicate"], res["status_changes"], res["address_changes"]) == (0, 3, 0, 0)


@pytest.mark.parametrize("body,reason", [
    ("not json at all", "body is not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"foo": 1}', "neither an SNS envelope nor an SES payload"),
    ('{"notificationType": "Delivery", "mail": {"messageId": "m"}}', "SES_ACCEPT_RAW is off"),
    ('{"Type": "Notification", "MessageId": "x"}', "unsupported SignatureVersion"),
])
def test_poison_is_quarantined_with_raw_body_and_reason(db, ingestor, body, reason):
    msg = qmsg(body)
    res = run(db, ingestor, [msg])
    assert res["quarantined"] == 1
    rows = table(db, "SELECT quarantine_id, source, raw_body, reason FROM quarantine")
    assert rows[0][:3] == (f"ses-notifications:{msg.sqs_message_id}", "ses-notifications", body)
    assert reason in rows[0][3]


def test_one_odd_payload_is_quarantined_and_the_rest_of_its_batch_applies(db, ingestor, identity):
    add_message(db, "m1", "a@example.com")
    add_message(db, "m2", "b@example.com")
    odd = json.loads(ses_message("Bounce", "m2", ["b@example.com"]))
    odd["bounce"]["bounceSubType"] = {"nested": True}
    res = run(db, ingestor, [signed(identity, ses_message("Delivery", "m1", ["a@example.com"])),
                             signed(identity, json.dumps(odd))])
    assert (res["events_new"], res["quarantined"]) == (1, 1)
    assert (status_of(db, "m1"), status_of(db, "m2")) == ("delivered", "sent")
    assert "bounceSubType" in table(db, "SELECT reason FROM quarantine")[0][0]


def test_verified_notification_that_is_not_ses_is_quarantined(db, ingestor, identity):
    res = run(db, ingestor, [signed(identity, "Hello world")])
    assert res["quarantined"] == 1
    assert "not an SES notification" in table(db, "SELECT reason FROM quarantine")[0][0]


def test_bad_signature_is_quarantined_not_applied(db, ingestor, identity):
    add_message(db, "m1", "a@example.com")
    env = json.loads(signed(identity, ses_message("Bounce", "m1", ["a@example.com"])))
    env["Message"] = env["Message"].replace("Permanent", "Transient")
    res = run(db, ingestor, [json.dumps(env)])
    assert (res["quarantined"], res["events_new"]) == (1, 0)
    assert status_of(db, "m1") == "sent"
    assert table(db, "SELECT reason FROM quarantine") == [("SNS Notification refused: signature does not verify",)]


def test_raw_delivery_accepted_only_when_configured(db, tmp_path, identity):
    add_message(db, "m1", "a@example.com")
    raw = ses_message("Delivery", "m1", ["a@example.com"])
    verifier = SnsVerifier([TOPIC], CertStore(tmp_path / "certs"))
    res = run(db, SesNotificationConsumer(verifier, accept_raw=True), [raw, raw])
    assert (res["events_new"], res["events_duplicate"]) == (1, 1)
    assert status_of(db, "m1") == "delivered"


def test_subscription_confirmation_allow_listed_is_confirmed_other_topic_refused(db, ingestor, identity, confirmations):
    ok = confirmation_envelope(identity, TOPIC, token="tok-1")
    other = confirmation_envelope(identity, "arn:aws:sns:us-east-1:123456789012:stranger", token="tok-2")
    unsub = confirmation_envelope(identity, TOPIC, unsubscribe=True)
    res = run(db, ingestor, [json.dumps(ok), json.dumps(other), json.dumps(unsub)])
    assert confirmations == [(TOPIC, "tok-1")]
    assert (res["controls"], res["quarantined"]) == (2, 1)
    assert table(db, "SELECT sns_type, action, subscription_arn FROM sns_control_messages ORDER BY sns_type") == [
        ("SubscriptionConfirmation", "confirmed", f"{TOPIC}:sub-1"), ("UnsubscribeConfirmation", "recorded", None)]
    reason = table(db, "SELECT reason FROM quarantine")[0][0]
    assert reason.startswith("SNS SubscriptionConfirmation refused: TopicArn") and "allow-list" in reason


def test_failed_confirmation_is_quarantined(db, tmp_path, identity):
    def confirm(topic, token):
        raise ConnectionError("SNS down")

    ing = SesNotificationConsumer(SnsVerifier([TOPIC], CertStore(tmp_path / "certs")), confirm=confirm)
    res = run(db, ing, [json.dumps(confirmation_envelope(identity, TOPIC))])
    assert res["quarantined"] == 1
    assert table(db, "SELECT reason FROM quarantine") == [("SubscriptionConfirmation could not be confirmed: ConnectionError",)]


def test_notifications_for_dispatch_statuses_are_recorded_without_change(db, ingestor, identity):
    add_message(db, "m1", "a@example.com", status="failed")
    res = run(db, ingestor, [signed(identity, ses_message("Delivery", "m1", ["a@example.com"]))])
    assert (res["events_new"], res["status_changes"], res["unexpected_transitions"]) == (1, 0, 1)
    assert status_of(db, "m1") == "failed"
