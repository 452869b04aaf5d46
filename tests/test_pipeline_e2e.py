"""The whole loop on the local stack, nothing bypassed:

dispatch() -> SQS email-requests -> email_requests_sensor -> send_email_batch_job (SES on moto)
-> mailbox simulator -> signed SNS envelope on SQS ses-notifications -> ses_notifications_sensor
-> ingest_ses_notifications_job -> email_messages.status and email_addresses.

In both store profiles: the DuckDB file, and PostgreSQL (the ledgers there, the same code path).
"""

import time

import dagster as dg

from pipelines.email.dispatch import dispatch
from tests.ledgers import count, rows as ledger_rows
from tests.sensor_runs import tick_and_run

SIM = "simulator.amazonses.com"
# recipient -> (final status, email_addresses row: verified, unverify_reason, transient_bounces)
EXPECTED = {
    f"success@{SIM}": ("delivered", (True, None, 0)),
    f"bounce@{SIM}": ("bounced", (False, "hard-bounce", 0)),
    f"complaint@{SIM}": ("complained", (False, "spam-complaint", 0)),
    f"ooto@{SIM}": ("delivered", (True, None, 0)),  # out of office after delivery: recorded, not counted
    f"soft-bounce@{SIM}": ("soft-bounced", (True, None, 1)),
}
# Delivery, Bounce, Delivery+Complaint, Delivery+Bounce, Bounce
EVENTS = 7


def state(env):
    statuses = dict(ledger_rows(env, "SELECT to_address, status FROM email_messages"))
    addresses = {r[0]: tuple(r[1:]) for r in ledger_rows(
        env, "SELECT address, verified, unverify_reason, transient_bounces FROM email_addresses")}
    events = ledger_rows(env, "SELECT count(*) FROM email_events e JOIN email_messages m USING (message_id)")[0][0]
    return statuses, addresses, events


def test_request_to_delivery_status_through_every_real_part(local_stack, profile_env, monkeypatch):
    monkeypatch.setenv("EMAIL_TRANSPORT", "ses")
    monkeypatch.setenv("SES_MAX_SEND_RATE", "50")
    env = profile_env
    instance = dg.DagsterInstance.ephemeral()

    dispatch("two-factor-added", [{"email": a, "verified": True} for a in EXPECTED],
             {"method": "totp", "username": "alice"}, request_id="loop-1")
    sent = tick_and_run(instance, "email_requests_sensor", "email_requests_queue", "send_email_batch_job")
    assert sent is not None and sent.output_for_node("send_email_batch")["sent"] == len(EXPECTED)
    assert set(state(env)[0].values()) == {"sent"}

    ingest_config = {"ops": {"drain_ses_notifications": {"config": {"wait_seconds": 1, "max_seconds": 20}}}}
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        tick_and_run(instance, "ses_notifications_sensor", "ses_notifications_queue",
                     "ingest_ses_notifications_job", ingest_config)
        statuses, addresses, events = state(env)
        if events >= EVENTS:
            break
        time.sleep(0.5)
    assert events == EVENTS
    assert statuses == {a: s for a, (s, _) in EXPECTED.items()}
    assert {a: addresses[a] for a in EXPECTED} == {a: row for a, (_, row) in EXPECTED.items()}

    # The suppressed addresses are now skipped by the next request of the same kind.
    dispatch("two-factor-added", [{"email": a, "verified": True} for a in EXPECTED],
             {"method": "webauthn", "username": "alice"}, request_id="loop-2")
    again = tick_and_run(instance, "email_requests_sensor", "email_requests_queue", "send_email_batch_job")
    out = again.output_for_node("send_email_batch")
    assert out["sent"] == 3 and out["skipped_suppressed"] == 2

    # Each drain run reported its ledgers as materialized, with the tables' row counts.
    def rows(key):
        event = instance.get_latest_materialization_event(dg.AssetKey(key))
        assert event is not None, key
        return event.asset_materialization.metadata["rows"].value

    counts = {t: count(env, t) for t in ("email_messages", "email_events", "email_addresses", "quarantine")}
    assert {t: rows(t) for t in counts} == counts
    assert counts["email_messages"] == 2 * len(EXPECTED) and counts["email_events"] >= EVENTS
