"""End to end on the local stack: SQS -> email_requests_sensor -> send_email_batch_job -> SMTP sink / SES (moto)."""

import email
import json
import urllib.request
import uuid
from email import policy

import dagster as dg

from devstack.mailbox_simulator import sent_messages
from pipelines.email.dispatch import dispatch
from tests.ledgers import rows as ledger_rows
from resources.aws import SQSQueueResource

KIND_CONTEXT = {
    "password-reset": {"n_hours": 6, "token": "tok-E2E-SECRET-1", "username": "alice"},
    "two-factor-added": {"method": "totp", "username": "bob"},
    "verify-email": {"email_address": "carol@example.org", "n_hours": 8, "token": "tok-E2E-SECRET-2"},
}


def enqueue(local_stack, requests):
    q = SQSQueueResource(queue_name="email-requests", region_name="us-east-1")
    q.send(json.dumps(r) if isinstance(r, dict) else r for r in requests)
    return q


def run_doorbell_then_job(instance, *, expect_run=True):
    from pipelines.definitions import defs

    sensor = defs.resolve_sensor_def("email_requests_sensor")
    resources = {"email_requests_queue": defs.resources["email_requests_queue"], "store": defs.resources["store"]}
    with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        data = sensor.evaluate_tick(ctx)
    if not expect_run:
        assert not data.run_requests and data.skip_message
        return None
    assert len(data.run_requests) == 1, data.skip_message
    rr = data.run_requests[0]
    job = defs.resolve_job_def("send_email_batch_job")
    result = job.execute_in_process(instance=instance, run_config=rr.run_config or {}, tags=rr.tags)
    assert result.success
    return result.output_for_node("send_email_batch")


def ledger(env):
    rows = ledger_rows(env, "SELECT request_id, to_address, kind, status, skip_reason, message_id, attempts, "
                            "remote_ip, from_address, subject FROM email_messages ORDER BY 1, 2")
    return rows, ledger_rows(env, "SELECT reason, raw_body FROM quarantine ORDER BY 1")


def requests_mix(flaky: str):
    """`flaky`: an smtp-451-1 address; the sink fails its first RCPT once per stack, so each test tags its own."""
    return [
        {"request_id": "e2e-1", "kind": "password-reset", "remote_ip": "203.0.113.9",
         "recipients": [{"email": "alice@example.org", "verified": True, "name": "Alice <Admin>", "acting_user": True,
                         "user_id": "u1"}],
         "context": KIND_CONTEXT["password-reset"]},
        {"request_id": "e2e-2", "kind": "two-factor-added", "remote_ip": "203.0.113.9",
         "recipients": [{"email": "bob@example.org", "verified": True, "user_id": "u2"},
                        {"email": "bob2@example.org", "verified": False},
                        {"email": None, "verified": True, "user_id": "u3"},
                        {"email": flaky, "verified": True}],
         "context": KIND_CONTEXT["two-factor-added"]},
        {"request_id": "e2e-3", "kind": "verify-email",
         "recipients": [{"email": "carol@example.org", "verified": False}],
         "context": KIND_CONTEXT["verify-email"]},
        "this is not json",
        {"request_id": "e2e-bad", "kind": "password-reset", "recipients": [{"email": "x@example.org", "verified": True}],
         "context": {"n_hours": 1, "username": "x", "token": None}},
    ]


def test_sqs_to_smtp_sink_end_to_end(local_stack, profile_env):
    stack_env = profile_env   # both store profiles
    instance = dg.DagsterInstance.ephemeral()
    run_doorbell_then_job(instance, expect_run=False)          # empty queue: the doorbell stays quiet
    flaky = f"smtp-451-1+{uuid.uuid4().hex[:8]}@example.org"
    enqueue(local_stack, requests_mix(flaky))
    out = run_doorbell_then_job(instance)
    assert out["sent"] == 4 and out["quarantined"] == 2 and out["skipped_no_address"] == 1
    assert out["skipped_unverified"] == 1 and out["deleted"] == 5

    got = {m.rcpt_tos[0]: m for m in local_stack.smtp.wait_for(4)}
    assert sorted(got) == sorted(["alice@example.org", "bob@example.org", "carol@example.org", flaky])
    assert local_stack.smtp.count() == 4
    alice = email.message_from_bytes(got["alice@example.org"].raw, policy=policy.default)
    assert alice.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in alice.iter_parts()] == ["text/plain", "text/html"]
    text, html = (p.get_content() for p in alice.iter_parts())
    assert "tok-E2E-SECRET-1" in text and "tok-E2E-SECRET-1" in html
    assert "Alice &lt;Admin&gt;" in html or "Alice <Admin>" not in html
    assert alice["From"].addresses[0].addr_spec == stack_env["EMAIL_SENDER"]
    assert got["alice@example.org"].mail_from == stack_env["EMAIL_SENDER"]

    rows, quarantine = ledger(stack_env)
    by_key = {(r[0], r[1]): r for r in rows}
    assert len(rows) == 6
    assert by_key[("e2e-1", "alice@example.org")][3] == "sent"
    assert by_key[("e2e-1", "alice@example.org")][5] == alice["Message-ID"].strip("<>")
    assert by_key[("e2e-1", "alice@example.org")][7] == "203.0.113.9"         # acting user: IP kept
    assert by_key[("e2e-2", "bob@example.org")][7] is None                     # not the acting user
    assert by_key[("e2e-2", flaky)][3:7:3] == ("sent", 2)
    assert by_key[("e2e-2", "bob2@example.org")][3:5] == ("skipped", "unverified")
    assert by_key[("e2e-3", "carol@example.org")][3] == "sent"                 # verify-email allows unverified
    assert {r[3] for r in rows} == {"sent", "skipped"}
    reasons = [q[0] for q in quarantine]
    assert any(r.startswith("invalid JSON") for r in reasons)
    assert "missing context variable 'token' for kind password-reset" in reasons
    assert "tok-E2E" not in json.dumps(rows, default=str) + json.dumps(quarantine)

    # The same requests again (a producer retry): nothing is sent twice, the ledger is unchanged.
    enqueue(local_stack, requests_mix(flaky))
    out2 = run_doorbell_then_job(instance)
    assert out2["sent"] == 0 and out2["already_recorded"] == 6
    assert local_stack.smtp.count() == 4
    assert ledger(stack_env)[0] == rows


def moto_raw_messages(endpoint):
    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=60) as resp:
        return sent_messages(json.load(resp))


def test_sqs_to_ses_end_to_end(local_stack, stack_env, monkeypatch):
    monkeypatch.setenv("EMAIL_TRANSPORT", "ses")
    before = {m.message_id for m in moto_raw_messages(local_stack.endpoint)}
    instance = dg.DagsterInstance.ephemeral()
    for i, kind in enumerate(KIND_CONTEXT):
        dispatch(kind, [{"email": f"ses{i}@example.org", "verified": True}], KIND_CONTEXT[kind],
                 request_id=f"ses-{i}")
    out = run_doorbell_then_job(instance)
    assert out["sent"] == 3 and out["transport"] == "ses"
    assert out["send_rate_limit"] == 14.0        # the local stack's GetSendQuota MaxSendRate, honoured
    assert out["seconds"] >= 2 / 14 * 0.98
    rows, _ = ledger(stack_env)
    ids = {r[1]: r[5] for r in rows if r[3] == "sent"}
    assert len(ids) == 3
    new = {m.message_id: m for m in moto_raw_messages(local_stack.endpoint) if m.message_id not in before}
    assert set(new) == set(ids.values()), "the ledger's message ids are the ones SES returned"
    for addr, mid in ids.items():
        sent = new[mid]
        assert sent.recipients == [addr] and sent.source == stack_env["EMAIL_SENDER"]
        m = email.message_from_string(sent.raw, policy=policy.default)
        assert m.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in m.iter_parts()] == ["text/plain", "text/html"]
    assert local_stack.smtp.count() == 0
    # redelivery sends nothing again
    for i, kind in enumerate(KIND_CONTEXT):
        dispatch(kind, [{"email": f"ses{i}@example.org", "verified": True}], KIND_CONTEXT[kind],
                 request_id=f"ses-{i}")
    assert run_doorbell_then_job(instance)["sent"] == 0
    assert len([m for m in moto_raw_messages(local_stack.endpoint) if m.message_id not in before]) == 3
