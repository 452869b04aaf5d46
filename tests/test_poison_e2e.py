"""Poison never takes good messages down with it, on the real local queues (moto SQS, the SMTP
sink, the mailbox simulator), with the Dagster jobs run in process as the sensor would start
them. And a notification that overtakes its send's record ends the same as one that follows it.
"""

from __future__ import annotations

import json
import random
import time
from email.message import EmailMessage

import dagster as dg
import duckdb
import pytest

from devstack.sns_signer import notification_envelope
from devstack.topology import SES_SENDER
from pipelines.common.counters import Counters
from pipelines.common.queue_message import QueueMessage
from pipelines.email.consumer import EmailRequestConsumer
from pipelines.email.builder import Builder
from pipelines.email.sending import RetryPolicy, Sender
from pipelines.email_delivery.ingest import relink_orphans
from pipelines.schema import database
from pipelines.store.store import Store
from resources.aws import SQSQueueResource
from resources.ses import SESSenderResource
from tests.email_delivery.ses_helpers import ses_message

pytestmark = pytest.mark.integration

SES_RUN = {"ops": {"drain_ses_notifications": {"config": {"wait_seconds": 1, "max_seconds": 60}}}}
SECRET = "tok-E2E-Poison-Secret-77"


def run_job(instance, job_name: str, run_config: dict | None = None):
    from pipelines.definitions import defs

    result = defs.resolve_job_def(job_name).execute_in_process(instance=instance, run_config=run_config or {})
    assert result.success, f"{job_name} failed: poison must be quarantined, never fail the run"
    return result


def queue_depth(local_stack, name: str) -> int:
    attrs = local_stack.client("sqs").get_queue_attributes(
        QueueUrl=local_stack.queue_urls[name],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def send_bodies(name: str, bodies: list[str]) -> None:
    random.Random(14).shuffle(bodies)
    SQSQueueResource(queue_name=name, region_name="us-east-1").send(bodies)


# -- SES notifications -----------------------------------------------------------------------------

def ses_poison(local_stack) -> list[str]:
    def signed(message: str, **kw) -> str:
        return json.dumps(notification_envelope(local_stack.signing, local_stack.topic_arn, message, **kw))

    bounce = json.loads(ses_message("Bounce", "poison-1", ["x@example.org"]))
    bounce["bounce"]["bounceType"] = ["Permanent"]
    nul_id = json.loads(ses_message("Delivery", "poison\x00id", ["y@example.org"]))
    bad_time = json.loads(ses_message("Delivery", "poison-3", ["z@example.org"]))
    bad_time["delivery"]["timestamp"] = "yesterday-ish"
    nul_address = json.loads(ses_message("Delivery", "poison-4", ["a\x00b@example.org"]))
    deep_detail = json.loads(ses_message("Complaint", "poison-5", ["d@example.org"]))
    deep_detail["complaint"]["nested"] = json.loads("[" * 600 + "]" * 600)
    return [
        json.dumps({"Type": []}),
        signed(json.dumps(bounce)),
        signed(json.dumps(nul_id)),
        signed(json.dumps(bad_time)),
        signed(json.dumps(nul_address)),
        signed(json.dumps(deep_detail)),
        "[" * 20_000 + "]" * 20_000,
        '{"Type": "Notification", "MessageId": "\\ud800", "Message": {"x": 1}}',
        '{"Type": {"a": 1}, "SignatureVersion": ["2"], "TopicArn": 7}',
        "not json",
    ]


def test_poison_amid_good_notifications_on_the_real_queue(local_stack, stack_env):
    db_path = stack_env["DUCKDB_PATH"]
    people = [f"good{i}@example.org" for i in range(20)]
    with database(db_path).connect() as conn:
        conn.executemany("INSERT INTO email_messages (request_id, to_address, kind, message_id, status, attempts, "
                         "sent_at) VALUES (?, ?, 'password-reset', ?, 'sent', 1, now())",
                         [(f"good-{i}", to, f"good-msg-{i}") for i, to in enumerate(people)])
    good = [json.dumps(notification_envelope(local_stack.signing, local_stack.topic_arn,
                                             ses_message("Bounce" if i % 4 == 0 else "Delivery", f"good-msg-{i}", [to])))
            for i, to in enumerate(people)]
    poison = ses_poison(local_stack)
    send_bodies("ses-notifications", good + poison)

    instance = dg.DagsterInstance.ephemeral()
    for _ in range(3):           # a run drains what it sees; late visibility can leave a few for the next
        run_job(instance, "ingest_ses_notifications_job", SES_RUN)
        if queue_depth(local_stack, "ses-notifications") == 0:
            break
    with duckdb.connect(db_path, read_only=True) as c:
        stored = {r[0] for r in c.execute("SELECT message_id FROM email_events WHERE NOT orphan").fetchall()}
        statuses = dict(c.execute("SELECT to_address, status FROM email_messages").fetchall())
        reasons = [r[0] for r in c.execute(
            "SELECT reason FROM quarantine WHERE source = 'ses-notifications' ORDER BY 1").fetchall()]
    assert stored == {f"good-msg-{i}" for i in range(20)}
    assert statuses == {to: "bounced" if i % 4 == 0 else "delivered" for i, to in enumerate(people)}
    assert len(reasons) == len(poison) and all(reasons)
    assert any("bounceType" in r for r in reasons) and any("timestamp" in r for r in reasons)
    assert queue_depth(local_stack, "ses-notifications") == 0
    assert queue_depth(local_stack, "ses-notifications-dlq") == 0


# -- email requests --------------------------------------------------------------------------------

def request(rid: str, *emails: str, **over) -> dict:
    body = {"request_id": rid, "kind": "password-reset",
            "recipients": [{"email": e, "verified": True, "name": "Reader"} for e in emails],
            "context": {"n_hours": 2, "token": SECRET, "username": "reader"}}
    body.update(over)
    return body


def email_poison() -> list[str]:
    ok = request("p", "p@example.org")
    return [
        "[" * 20_000 + "]" * 20_000,
        '{"request_id": ' + "[" * 5_000 + "]" * 5_000 + "}",
        json.dumps(request("p-surrogate-id", "s@example.org")).replace("p-surrogate-id", "\\ud800"),
        json.dumps(request("p-surrogate-kind", "s@example.org")).replace("password-reset", "pass\\udfff"),
        json.dumps(request("p-surrogate-address", "s@example.org")).replace("s@example.org", "s\\ud800@example.org"),
        json.dumps(request("p-surrogate-user", "s@example.org")).replace('"verified"', '"user_id": "\\ud800", "verified"'),
        json.dumps(request("p-surrogate-subject", "s@example.org")).replace('"reader"}', '"\\udc00"}'),
        json.dumps(request("p-window", "w@example.org", repeat_window="999999999d")),
        json.dumps(request("p-newline\n", "n@example.org")),
        json.dumps(request("p-local-65", "a" * 65 + "@example.org")),
        json.dumps(request("p-local-300", "a" * 300 + "@example.org")),
        json.dumps(request("p-nul-subject", "n@example.org", context={"n_hours": 2, "token": SECRET,
                                                                      "username": "re\x00ader"})),
        json.dumps(request("p-nul-sender", "n@example.org", sender="Mail\x00room <noreply@mailroom.test>")),
        json.dumps(request("p-two-senders", "n@example.org", sender="a@mailroom.test, b@mailroom.test")),
        json.dumps(json.dumps(ok)),                                   # double-encoded, carrying the token
        f"request_id=p-text kind=password-reset token={SECRET}",      # not JSON, carrying the token
        json.dumps({"Type": []}),
    ]


def test_poison_amid_good_requests_on_the_real_queue(local_stack, stack_env):
    db_path = stack_env["DUCKDB_PATH"]
    good = [request(f"good-{i}", f"reader{i}@example.org", *([f"second{i}@example.org"] if i % 3 == 0 else []))
            for i in range(12)]
    wanted = sorted(r["email"] for g in good for r in g["recipients"])
    poison = email_poison()
    send_bodies("email-requests", [json.dumps(g) for g in good] + poison)

    instance = dg.DagsterInstance.ephemeral()
    for _ in range(3):
        run_job(instance, "send_email_batch_job")
        if queue_depth(local_stack, "email-requests") == 0:
            break
    got = sorted(m.rcpt_tos[0] for m in local_stack.smtp.wait_for(len(wanted)))
    assert got == wanted

    # The same id again with other recipients: quarantined, nothing sent; an identical copy: a no-op.
    send_bodies("email-requests", [json.dumps(request("good-1", "intruder@example.org")), json.dumps(good[2])])
    run_job(instance, "send_email_batch_job")
    assert local_stack.smtp.count() == len(wanted)

    with duckdb.connect(db_path, read_only=True) as c:
        reasons = [r[0] for r in c.execute(
            "SELECT reason FROM quarantine WHERE source = 'email-requests' ORDER BY quarantined_at").fetchall()]
        everything = json.dumps([c.execute(f'SELECT * FROM "{t}"').fetchall() for (t,) in c.execute(
            "SELECT table_name FROM information_schema.tables").fetchall()], default=str)
    assert len(reasons) == len(poison) + 1 and all(reasons)
    assert reasons[-1] == "request_id reused with different content"
    assert SECRET not in everything
    assert queue_depth(local_stack, "email-requests") == 0
    assert queue_depth(local_stack, "email-requests-dlq") == 0


# -- a notification that overtakes its send's record ---------------------------------------------------

def _consumer(local_stack) -> EmailRequestConsumer:
    return EmailRequestConsumer(Builder(), Sender(SESSenderResource(region_name="us-east-1"), concurrency=2,
                                                  policy=RetryPolicy(base_delay=0)),
                                default_sender=SES_SENDER, transport_name="ses", on_recorded=relink_orphans)


def _final(db_path: str):
    with duckdb.connect(db_path, read_only=True) as c:
        row = c.execute("SELECT status, message_id FROM email_messages").fetchone()
        events = c.execute("SELECT event_type, orphan, status_before, status_after FROM email_events "
                           "WHERE message_id = ? ORDER BY occurred_at", [row[1]]).fetchall()
        address = c.execute("SELECT verified, unverify_reason FROM email_addresses WHERE address = ?",
                            ["bounce@simulator.amazonses.com"]).fetchall()
        changes = c.execute("SELECT address, verified, reason FROM address_status_changes").fetchall()
    return row[0], events, address, changes


def _ingest_until(instance, local_stack, db_path: str, message_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if queue_depth(local_stack, "ses-notifications"):
            run_job(instance, "ingest_ses_notifications_job", SES_RUN)
        with duckdb.connect(db_path, read_only=True) as c:
            if c.execute("SELECT count(*) FROM email_events WHERE message_id = ?", [message_id]).fetchone()[0]:
                return
        time.sleep(0.5)
    raise AssertionError(f"no notification for {message_id} within 30 s")


@pytest.mark.parametrize("order", ["notification-first", "send-first"])
def test_status_does_not_depend_on_which_commit_comes_first(local_stack, stack_env, order):
    """SES (moto) sends to the mailbox simulator's bounce address, which bounces within a second."""
    db_path = stack_env["DUCKDB_PATH"]
    instance = dg.DagsterInstance.ephemeral()
    consumer = _consumer(local_stack)
    store = Store(database(db_path).connect, hold_seconds=0)
    msg = QueueMessage("sqs-order", "rh", json.dumps(request("order-1", "bounce@simulator.amazonses.com")))
    prepared = consumer.prepare([msg])
    with store.transaction() as conn:
        consumer.commit(conn, prepared)
    store.close()
    # after_commit in its two halves: the send, then the record of its outcome (message_id).
    window, early, futures = consumer._submit(prepared.to_send)
    message_id = futures[0].result().message_id
    counters = Counters()
    if order == "notification-first":
        _ingest_until(instance, local_stack, db_path, message_id)
        with duckdb.connect(db_path, read_only=True) as c:
            assert c.execute("SELECT bool_and(orphan) FROM email_events WHERE message_id = ?",
                             [message_id]).fetchone()[0], "stored before its send was recorded: an orphan"
        counters.update(consumer._record(store, window, early, futures, prepared.started))
        store.close()
        assert counters["orphans_relinked"] == 1
    else:
        counters.update(consumer._record(store, window, early, futures, prepared.started))
        store.close()
        _ingest_until(instance, local_stack, db_path, message_id)
    consumer.close()
    status, events, address, changes = _final(db_path)
    assert status == "bounced"
    assert events == [("Bounce", False, "sent", "bounced")]
    assert address == [(False, "hard-bounce")]
    assert changes == [("bounce@simulator.amazonses.com", False, "hard-bounce")]
