"""Retention, quarantine replay, reporting assets and their SES-threshold checks, the verify
worker pool, and the outbound address-change queue."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from devstack.sns_signer import confirmation_envelope
from pipelines.common.queue_message import QueueMessage
from pipelines.email_delivery.address_changes import publish_address_changes
from pipelines.email_delivery.assets import email_delivery_daily, email_status, ses_reputation
from pipelines.common.sns.cert_store import CertStore
from pipelines.email_delivery.cleanup import cleanup
from pipelines.email_delivery.consumer import SesNotificationConsumer
from pipelines.email_delivery.parallel import PreparePool
from pipelines.email_delivery.reporting import grade
from pipelines.common.sns.verify import SnsVerifier
from pipelines.store_resource import MailroomStore
from resources.aws import SQSQueueResource
from tests.fakes import process
from tests.email_delivery.ses_helpers import TOPIC, ses_message, signed
from tests.paths import REPO_ROOT

NOW = datetime.now(timezone.utc)


def verifier(tmp_path, topics=(TOPIC,)):
    return SnsVerifier(list(topics), CertStore(tmp_path / "certs"), max_age_seconds=0)


def add(conn, rid, status, created_days_ago, message_id=None, kind="password-reset", to=None):
    conn.execute("INSERT INTO email_messages (request_id, to_address, kind, message_id, status, created_at, sent_at) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)",
                 [rid, to or f"{rid}@example.org", kind, message_id, status, NOW - timedelta(days=created_days_ago),
                  NOW - timedelta(days=created_days_ago)])


def add_event(conn, event_id, message_id, event_type="Delivery", orphan=False, days_ago=0, bounce_type=None):
    conn.execute("INSERT INTO email_events (event_id, sns_message_id, message_id, event_type, bounce_type, occurred_at, "
                 "received_at, orphan) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 [event_id, event_id, message_id, event_type, bounce_type, NOW - timedelta(days=days_ago),
                  NOW - timedelta(days=days_ago), orphan])


def test_cleanup_keeps_what_operators_need(db):
    with db.connect() as conn:
        add(conn, "sent-old", "sent", 15, "m1")
        add(conn, "delivered-old", "delivered", 15, "m2")
        add(conn, "bounced-old", "bounced", 15, "m3")
        add(conn, "delivered-new", "delivered", 13, "m4")
        add(conn, "complained-ancient", "complained", 91, "m5")
        add(conn, "pending-old", "pending", 15)
        for i, mid in enumerate(["m1", "m2", "m3", "m4", "m5"]):
            add_event(conn, f"e{i}", mid)
        add_event(conn, "orphan-old", "zz", orphan=True, days_ago=91)
        add_event(conn, "orphan-new", "zz", orphan=True, days_ago=10)
        res = cleanup(conn, NOW)
        assert (res.messages, res.events) == (3, 4)
        assert sorted(r[0] for r in conn.execute("SELECT request_id FROM email_messages").fetchall()) == [
            "bounced-old", "delivered-new", "pending-old"]
        assert sorted(r[0] for r in conn.execute("SELECT event_id FROM email_events").fetchall()) == [
            "e2", "e3", "orphan-new"]
        assert cleanup(conn, NOW) == type(res)(0, 0)
        # Configurable windows.
        assert cleanup(conn, NOW, final_days=1, all_days=12).messages == 3


def replay(conn, consumer):
    from pipelines.common.consumer import replay_quarantine
    from pipelines.store.store import Store

    return replay_quarantine(Store.over(conn), consumer)


def test_replay_after_the_allow_list_is_fixed(db, tmp_path, identity):
    other = "arn:aws:sns:us-east-1:123456789012:second-region-topic"
    with db.connect() as conn:
        add(conn, "r1", "sent", 0, "m1", to="a@example.com")
    body = signed(identity, ses_message("Bounce", "m1", ["a@example.com"]), topic=other)
    with db.connect() as conn:
        res = process(conn, SesNotificationConsumer(verifier(tmp_path)), [QueueMessage("sqs-1", "rh", body),
                                                           QueueMessage("sqs-2", "rh", "garbage")])
        assert res["quarantined"] == 2
        # Nothing fixed yet: both fail again, with their current reasons.
        assert replay(conn, SesNotificationConsumer(verifier(tmp_path)))["still_failing"] == 2
        result = replay(conn, SesNotificationConsumer(verifier(tmp_path, [TOPIC, other])))
        assert (result["still_failing"], result["events_new"], result["status_changes"], result["quarantined"]) \
            == (1, 1, 1, 0)
        rows = conn.execute("SELECT sqs_message_id, replay_result, replayed_at IS NOT NULL FROM quarantine "
                            "ORDER BY 1").fetchall()
        assert rows == [("sqs-1", "ok", True), ("sqs-2", "body is not JSON", True)]
        assert conn.execute("SELECT status FROM email_messages").fetchone()[0] == "bounced"
        # A replayed row is not replayed again; the poison one still is.
        result = replay(conn, SesNotificationConsumer(verifier(tmp_path, [TOPIC, other])))
        assert (result["messages"], result["still_failing"]) == (1, 1)


def test_replay_days_later_counts_the_age_limit_to_when_the_message_arrived(db, tmp_path, identity):
    other = "arn:aws:sns:us-east-1:123456789012:second-region-topic"
    two_days_later = datetime.now(timezone.utc) + timedelta(days=2)

    def aged(topics, now=None):
        return SesNotificationConsumer(SnsVerifier(list(topics), CertStore(tmp_path / "certs"), max_age_seconds=3600, now=now))

    with db.connect() as conn:
        add(conn, "r1", "sent", 0, "m1", to="a@example.com")
        fresh = signed(identity, ses_message("Delivery", "m1", ["a@example.com"]), topic=other)
        assert process(conn, aged([TOPIC]), [QueueMessage("sqs-1", "rh", fresh)])["quarantined"] == 1
        # Fixed two days later: the envelope was fresh when it reached us, so it is accepted now.
        result = replay(conn, aged([TOPIC, other], now=lambda: two_days_later))
        assert (result["still_failing"], result["events_new"], result["status_changes"]) == (0, 1, 1)
        assert conn.execute("SELECT status FROM email_messages").fetchone()[0] == "delivered"
        # The same envelope arriving live two days later is refused as too old.
        late = process(conn, aged([TOPIC, other], now=lambda: two_days_later), [QueueMessage("sqs-2", "rh", fresh)])
        assert late["quarantined"] == 1
        reason = conn.execute("SELECT reason FROM quarantine WHERE sqs_message_id = 'sqs-2'").fetchone()[0]
        assert "s old, over the 3600 s limit" in reason


def test_pool_gives_the_same_result_as_inline(tmp_path, identity):
    confirmed = []
    ing = SesNotificationConsumer(verifier(tmp_path), confirm=lambda topic, token: confirmed.append(token) or "arn:sub")
    msgs = [QueueMessage(f"s{i}", "rh", signed(identity, ses_message("Delivery", f"m{i}", [f"u{i}@example.org"])))
            for i in range(30)]
    msgs += [QueueMessage("poison", "rh", "{"),
             QueueMessage("conf", "rh", json.dumps(confirmation_envelope(identity, TOPIC, token="tok")))]
    inline = ing.prepare(msgs)
    with PreparePool(ing, workers=2, chunk=7) as pool:
        assert len(set(pool.worker_pids())) == 2  # both started up front, not on demand
        pool.submit(msgs[:20])
        pooled = pool.prepare(list(reversed(msgs)))
    assert inline.events.num_rows == 30
    assert pooled.events.sort_by("event_id").equals(inline.events.sort_by("event_id"))
    assert pooled.outcomes == inline.outcomes
    assert [c.action for c in pooled.controls] == ["confirmed"] and pooled.controls[0].token is None
    assert confirmed == ["tok", "tok"]


def test_verify_worker_imports_no_heavy_library():
    # Each worker's memory counts against the consumer's: a worker that examined a message must
    # not have loaded pyarrow, DuckDB, pandas or Dagster (they made each worker ~190 MB).
    code = ("import sys\n"
            "from pipelines.email_delivery import verify_worker\n"
            "verify_worker.init(['arn:aws:sns:us-east-1:1:t'], None, 0, False)\n"
            "rows, columns = verify_worker.examine_chunk([('s1', '{}', None)])\n"
            "assert rows[0][3] == 'neither an SNS envelope nor an SES payload', rows\n"
            "print(sorted(m for m in ('pyarrow', 'duckdb', 'pandas', 'dagster') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO_ROOT)
    assert out.stdout.strip() == "[]"


def test_pool_message_received_again_before_its_batch_is_verified_once_and_nothing_is_left(tmp_path, identity):
    ing = SesNotificationConsumer(verifier(tmp_path))
    msgs = [QueueMessage(f"s{i}", "rh", signed(identity, ses_message("Delivery", f"m{i}", [f"u{i}@example.org"])))
            for i in range(10)]
    again = QueueMessage("s3", "rh-new", msgs[3].body)  # the same SQS message, a new receipt handle
    with PreparePool(ing, workers=2, chunk=4) as pool:
        pool.submit(msgs[:6])
        pool.submit([again])
        pool.submit(msgs[6:])
        prepared = pool.prepare(msgs[:3] + [again] + msgs[4:])
        assert prepared.events.num_rows == 10
        assert sorted(prepared.events.column("message_id").to_pylist()) == sorted(f"m{i}" for i in range(10))
        assert pool._futures == {} and pool._chunks == {}  # no chunk kept alive by the second copy


@pytest.mark.parametrize("rate,level", [(0.0, "ok"), (0.0499, "ok"), (0.05, "warn"), (0.0999, "warn"), (0.10, "fail")])
def test_bounce_grades(rate, level):
    assert grade(rate, 0.05, 0.10) == level


def _seed_reputation(db, sent, hard, complaints, kind="password-reset"):
    """`sent` messages of `kind`, each delivered; the first `hard` hard-bounced, the last
    `complaints` complained (set-wise: row-at-a-time inserts made these tests slow)."""
    events = ("INSERT INTO email_events (event_id, sns_message_id, message_id, event_type, bounce_type, occurred_at, "
              "received_at, orphan) SELECT $k || $e || i, $k || $e || i, $k || '-m' || ({m}), $type, $bounce, $now, $now, "
              "false FROM range($n) r(i)")
    with db.connect() as conn:
        conn.execute("INSERT INTO email_messages (request_id, to_address, kind, message_id, status, created_at, "
                     "sent_at) SELECT $k || '-' || i, $k || '-' || i || '@example.org', $k, $k || '-m' || i, 'sent', "
                     "$now, $now FROM range($n) r(i)", {"k": kind, "now": NOW, "n": sent})
        for e, m, n, event_type, bounce in (("-d", "i", sent, "Delivery", None), ("-b", "i", hard, "Bounce", "Permanent"),
                                            ("-c", f"{sent - 1} - i", complaints, "Complaint", None)):
            conn.execute(events.format(m=m), {"k": kind, "e": e, "type": event_type, "bounce": bounce, "now": NOW, "n": n})


def _checks(result):
    return {e.check_name: (e.passed, e.severity) for e in result.get_asset_check_evaluations()}


@pytest.mark.parametrize("sent,hard,complaints,bounce,complaint", [
    (1000, 10, 0, (True, dg.AssetCheckSeverity.WARN), (True, dg.AssetCheckSeverity.WARN)),
    (1000, 60, 2, (False, dg.AssetCheckSeverity.WARN), (False, dg.AssetCheckSeverity.WARN)),
    (1000, 120, 6, (False, dg.AssetCheckSeverity.ERROR), (False, dg.AssetCheckSeverity.ERROR)),
])
def test_reputation_checks_warn_and_fail_at_ses_thresholds(db, sent, hard, complaints, bounce, complaint):
    _seed_reputation(db, sent, hard, complaints)
    result = dg.materialize([email_status, email_delivery_daily, ses_reputation], resources={"store": MailroomStore(duckdb_path=db.path)},
                            raise_on_error=False)
    assert result.success
    assert _checks(result) == {"bounce_rate_below_ses_thresholds": bounce,
                               "complaint_rate_below_ses_thresholds": complaint}
    meta = result.asset_materializations_for_node("ses_reputation")[0].metadata
    assert meta["bounce_rate"].value == pytest.approx(hard / sent)
    assert meta["complaint_rate"].value == pytest.approx(complaints / sent)
    assert isinstance(meta["bounce_rate"], dg.FloatMetadataValue)


def test_delivery_daily_and_status_view(db):
    _seed_reputation(db, 10, 2, 1, kind="password-reset")
    _seed_reputation(db, 4, 0, 0, kind="verify-email")
    with db.connect() as conn:
        add(conn, "never-sent", "failed", 0, None)
        add_event(conn, "soft", "password-reset-m5", "Bounce", bounce_type="Transient")
    result = dg.materialize([email_status, email_delivery_daily], resources={"store": MailroomStore(duckdb_path=db.path)})
    assert result.success
    with db.connect() as conn:
        rows = conn.execute("SELECT kind, sent, delivered, hard_bounced, soft_bounced, complained, bounce_rate, "
                            "complaint_rate FROM email_delivery_daily ORDER BY kind").fetchall()
        assert rows == [("password-reset", 10, 10, 2, 1, 1, 0.2, 0.1), ("verify-email", 4, 4, 0, 0, 0, 0.0, 0.0)]
        assert conn.execute("SELECT count(*), count(last_event_type) FROM email_status").fetchone() == (15, 14)
    # Rebuilt, not appended, on a second materialisation.
    dg.materialize([email_status, email_delivery_daily], resources={"store": MailroomStore(duckdb_path=db.path)})
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM email_delivery_daily").fetchone()[0] == 2


def test_address_changes_are_published_once(db, tmp_path, identity, local_stack, stack_env):
    sqs = local_stack.client("sqs")
    url = sqs.create_queue(QueueName="address-changes-test")["QueueUrl"]
    queue = SQSQueueResource(queue_name="address-changes-test", region_name="us-east-1")
    with db.connect() as conn:
        add(conn, "r1", "sent", 0, "m1", to="a@example.com")
        process(conn, SesNotificationConsumer(verifier(tmp_path)), [QueueMessage("s1", "rh", signed(
            identity, ses_message("Complaint", "m1", ["a@example.com"])))])
        assert publish_address_changes(conn, queue.send) == 1
        assert publish_address_changes(conn, queue.send) == 0
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2)["Messages"]
    assert len(got) == 1
    body = json.loads(got[0]["Body"])
    assert (body["address"], body["verified"], body["reason"]) == ("a@example.com", False, "spam-complaint")
    assert body["change_id"].endswith(":a@example.com")
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM address_status_changes WHERE published_at IS NULL").fetchone()[0] == 0


def test_store_reopens_its_connection_after_its_time_so_others_get_the_file(db, monkeypatch):
    from pipelines.store import store as store_module

    clock = [100.0]
    monkeypatch.setattr(store_module.time, "monotonic", lambda: clock[0])
    held = store_module.Store(db.connect, hold_seconds=10)
    first = held.connection()
    assert held.connection() is first
    clock[0] += 10
    second = held.connection()
    assert second is not first and held.opens == 2
    held.close()
    # Closed: another process could open the file now; here, a fresh connection works.
    with db.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_pool_keeps_good_notifications_when_one_in_their_chunk_breaks_the_worker(db, tmp_path, identity):
    # A body the examiner might raise on (a list where SNS has a string): whether it is refused
    # with a reason or raises in the worker, the good notifications of its chunk are all stored.
    from pipelines.common.consumer import process_batch
    from pipelines.email_delivery.parallel import PooledSesNotificationConsumer
    from pipelines.store.store import Store

    with db.connect() as conn:
        for i in range(20):
            add(conn, f"r{i}", "sent", 0, f"m{i}", to=f"u{i}@example.org")
    msgs = [QueueMessage(f"s{i}", "rh", signed(identity, ses_message("Delivery", f"m{i}", [f"u{i}@example.org"])))
            for i in range(20)]
    msgs.insert(7, QueueMessage("poison", "rh", json.dumps({"Type": []})))
    with PooledSesNotificationConsumer(SesNotificationConsumer(verifier(tmp_path)), workers=2, chunk=8) as consumer, Store(db.connect) as store:
        consumer.on_receive(msgs)
        counters = process_batch(store, consumer, msgs)
    assert counters["events_new"] == 20 and counters["quarantined"] == 1
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM email_messages WHERE status = 'delivered'").fetchone()[0] == 20
        assert conn.execute("SELECT sqs_message_id FROM quarantine").fetchall() == [("poison",)]
