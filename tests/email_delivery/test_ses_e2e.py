"""End to end on the local stack: SES send (moto) -> mailbox simulator -> SNS envelope -> SQS
ses-notifications -> ses_notifications_sensor -> ingest_ses_notifications_job -> DuckDB."""

from __future__ import annotations

import json
import time
from email.message import EmailMessage

import dagster as dg

from devstack.sns_signer import confirmation_envelope, notification_envelope
from devstack.topology import SES_SENDER
from pipelines.common.queue_message import QueueMessage
from pipelines.common.sns.cert_store import CertStore
from pipelines.email_delivery.consumer import SesNotificationConsumer
from pipelines.common.sns.verify import SnsVerifier
from tests.fakes import process
from tests.sensor_runs import tick_and_run
from resources.aws import SNSResource, SQSQueueResource
from pipelines.schema import configured_store, database
from tests.ledgers import rows, table

SIM = "simulator.amazonses.com"
# recipient -> (notifications the simulator sends, final message status, address row)
EXPECTED = {
    "reader@example.org": (1, "delivered", (True, None, 0)),
    f"bounce@{SIM}": (1, "bounced", (False, "hard-bounce", 0)),
    f"complaint@{SIM}": (2, "complained", (False, "spam-complaint", 0)),
    f"ooto@{SIM}": (2, "delivered", (True, None, 0)),
    f"soft-bounce@{SIM}": (1, "soft-bounced", (True, None, 1)),
    f"suppressed@{SIM}": (1, "bounced", (False, "hard-bounce", 0)),
}
RUN_CONFIG = {"ops": {"drain_ses_notifications": {"config": {"wait_seconds": 1, "max_seconds": 30}}}}


def send_like_dispatch(local_stack, env) -> dict[str, str]:
    """SESv2 raw SendEmail per recipient, then the email_messages row dispatch writes ('sent')."""
    sesv2 = local_stack.client("sesv2")
    ids = {}
    for i, to in enumerate(EXPECTED):
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = SES_SENDER, to, f"e2e {i}"
        msg.set_content("hello")
        ids[to] = sesv2.send_email(FromEmailAddress=SES_SENDER, Destination={"ToAddresses": [to]},
                                   Content={"Raw": {"Data": msg.as_bytes()}})["MessageId"]
    with configured_store(env) as store, store.transaction() as conn:
        conn.executemany(
            "INSERT INTO email_messages (request_id, to_address, kind, message_id, from_address, subject, status, "
            "attempts, transport, sent_at) VALUES (?, ?, 'password-reset', ?, ?, 'e2e', 'sent', 1, 'ses', now())",
            [(f"ses-e2e-{i}", to, ids[to], SES_SENDER) for i, to in enumerate(EXPECTED)])
    return ids


def doorbell_then_job(instance):
    return tick_and_run(instance, "ses_notifications_sensor", "ses_notifications_queue", "ingest_ses_notifications_job",
                        RUN_CONFIG)


def snapshot(env, ids: dict[str, str]):
    statuses = dict(rows(env, "SELECT to_address, status FROM email_messages WHERE request_id LIKE 'ses-e2e-%'"))
    addresses = {r[0]: r[1:] for r in rows(
        env, "SELECT address, verified, unverify_reason, transient_bounces FROM email_addresses")}
    events = rows(env, f"SELECT count(*) FROM email_events WHERE message_id IN ({', '.join('?' * len(ids))})",
                  list(ids.values()))[0][0]
    tables = [table(env, t) for t in ("email_messages", "email_addresses", "address_status_changes", "quarantine")]
    # Orphans excluded: late notifications of other tests' sends may still arrive.
    tables.append(table(env, "email_events", where="NOT orphan", exclude=["received_at"]))
    return statuses, addresses, events, tables


def test_ses_notifications_end_to_end(local_stack, profile_env):
    env = profile_env   # both store profiles
    instance = dg.DagsterInstance.ephemeral()
    ids = send_like_dispatch(local_stack, env)
    # Poison on the same queue: quarantined by the same run, never blocking it.
    stranger = "arn:aws:sns:us-east-1:123456789012:not-ours"
    forged = notification_envelope(local_stack.signing, stranger, json.dumps({"notificationType": "Delivery"}))
    SQSQueueResource(queue_name="ses-notifications", region_name="us-east-1").send(["not json", json.dumps(forged)])
    want_events = sum(n for n, _, _ in EXPECTED.values())

    deadline = time.monotonic() + 45
    runs = 0
    while time.monotonic() < deadline:
        if doorbell_then_job(instance) is not None:
            runs += 1
        statuses, addresses, events, _ = snapshot(env, ids)
        if events >= want_events:
            break
        time.sleep(0.5)
    assert runs >= 1
    assert events == want_events
    assert statuses == {to: status for to, (_, status, _) in EXPECTED.items()}
    assert {a: addresses[a] for a in EXPECTED} == {to: row for to, (_, _, row) in EXPECTED.items()}
    changes = sorted(rows(env, "SELECT address, verified, reason FROM address_status_changes"))
    assert changes == [(f"bounce@{SIM}", False, "hard-bounce"), (f"complaint@{SIM}", False, "spam-complaint"),
                       (f"suppressed@{SIM}", False, "hard-bounce")]
    reasons = sorted(r[0] for r in rows(env, "SELECT reason FROM quarantine WHERE source = 'ses-notifications'"))
    assert reasons == ["SNS Notification refused: TopicArn 'arn:aws:sns:us-east-1:123456789012:not-ours' is not on "
                       "the allow-list", "body is not JSON"]

    # The queue is drained: the doorbell stays quiet, and a second drain changes nothing.
    before = snapshot(env, ids)[3]
    from pipelines.definitions import defs

    assert defs.resolve_job_def("ingest_ses_notifications_job").execute_in_process(
        instance=instance, run_config=RUN_CONFIG).success
    assert snapshot(env, ids)[3] == before


def test_subscription_confirmation_is_confirmed_through_the_sns_api(local_stack, stack_env):
    sns = SNSResource(region_name="us-east-1")
    ingestor = SesNotificationConsumer(SnsVerifier([local_stack.topic_arn], CertStore(local_stack.cert_dir)),
                        confirm=sns.confirm_subscription)
    env = confirmation_envelope(local_stack.signing, local_stack.topic_arn, token="a1b2c3" * 10)
    with database(stack_env["DUCKDB_PATH"]).connect() as conn:
        result = process(conn, ingestor, [QueueMessage("sqs-conf", "rh", json.dumps(env))])
        row = conn.execute("SELECT sns_type, topic_arn, action, subscription_arn FROM sns_control_messages").fetchone()
    assert (result["controls"], result["quarantined"]) == (1, 0)
    assert row[:3] == ("SubscriptionConfirmation", local_stack.topic_arn, "confirmed")
    assert row[3].startswith(local_stack.topic_arn + ":")
