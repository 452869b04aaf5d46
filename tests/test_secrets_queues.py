"""Secrets never land, on the real queues (moto SQS, the SMTP sink), with the Dagster jobs run in
process on an instance whose storage is on disk: poison bodies carrying planted secrets among
good messages. Every good message is stored or sent, every poison one quarantined, and no planted
value is found in the DuckDB file, the Dagster storage (run and event-log databases, compute
logs) or the log file of the run."""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from urllib.parse import quote, urlencode

import dagster as dg
import duckdb
import pytest

from bench import stripe_samples as s
from devstack.sns_signer import notification_envelope
from pipelines.common.quarantine import REDACTED_COPY
from pipelines.schema import database
from resources.aws import SQSQueueResource
from tests.email_delivery.ses_helpers import ses_message

pytestmark = pytest.mark.integration

# One planted value per placement; each must be found nowhere.
PLANTED = {where: f"Pl4nted{where.title().replace('-', '')}Value{n:03d}x" for n, where in enumerate([
    "string", "list", "object", "repr", "not-json", "double-encoded", "url-encoded", "header", "bearer",
    "deep", "shape", "webhook"])}


def poison_bodies() -> list[str]:
    """Bodies no consumer accepts, each carrying one planted value."""
    p = PLANTED
    return [
        json.dumps({"request_id": "x", "context": {"token": p["string"]}, "recipients": 7}),
        json.dumps({"kind": "nope", "a": [{"password": [p["list"], 1]}]}),
        json.dumps({"Type": [], "nested": {"client_secret": {"inner": p["object"]}}}),
        repr({"token": p["repr"], "kind": "password-reset"}),
        f"request_id=p kind=password-reset api_key={p['not-json']} and more",
        json.dumps(json.dumps({"context": {"token": [p["double-encoded"]]}})),
        quote(json.dumps({"auth": {"session": p["url-encoded"]}})) + "&" + urlencode({"x": 1}),
        f"POST /x HTTP/1.1\r\nX-Api-Key: {p['header']}\r\n\r\n",
        f"upstream: Authorization: Bearer {p['bearer']}",
        "[" * 2000 + json.dumps({"secret": p["deep"]}),
        json.dumps({"note": f"configured with sk_live_{p['shape']}"}),
    ]


def send(name: str, bodies: list[str]) -> None:
    random.Random(19).shuffle(bodies)
    SQSQueueResource(queue_name=name, region_name="us-east-1").send(bodies)


def queue_depth(local_stack, name: str) -> int:
    attrs = local_stack.client("sqs").get_queue_attributes(
        QueueUrl=local_stack.queue_urls[name],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


@pytest.fixture
def logged(tmp_path):
    """The run's log in a file: the project's and Dagster's records at DEBUG, every other library's
    at INFO (botocore's DEBUG records quote whole HTTP bodies, this test's own sends included)."""
    path = tmp_path / "run.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    loggers = [root, logging.getLogger("pipelines"), logging.getLogger("resources"), logging.getLogger("dagster")]
    levels = [lg.level for lg in loggers]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for lg in loggers[1:]:
        lg.setLevel(logging.DEBUG)
    yield path
    root.removeHandler(handler)
    for lg, level in zip(loggers, levels):
        lg.setLevel(level)
    handler.close()


def drain(local_stack, job: str, queue: str, run_config: dict | None = None, rounds: int = 3) -> dg.DagsterInstance:
    from pipelines.definitions import defs

    instance = dg.DagsterInstance.get()   # DAGSTER_HOME of stack_env: storage on disk
    for _ in range(rounds):
        result = defs.resolve_job_def(job).execute_in_process(instance=instance, run_config=run_config or {})
        assert result.success, f"{job} failed: poison must be quarantined, never fail the run"
        if queue_depth(local_stack, queue) == 0:
            break
    return instance


def assert_found_nowhere(stack_env: dict, log_file: Path, values) -> None:
    db_path = stack_env["DUCKDB_PATH"]
    with duckdb.connect(db_path, read_only=True) as c:
        tables = [t[0] for t in c.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        dump = json.dumps({t: c.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}, default=str)
    places = {"DuckDB tables": dump, "log file": log_file.read_text(encoding="utf-8", errors="replace")}
    for root in (Path(db_path).parent.glob(Path(db_path).name + "*"), Path(stack_env["DAGSTER_HOME"]).rglob("*")):
        for path in root:
            if path.is_file():
                places[str(path)] = path.read_bytes().decode("latin-1")
    assert any("dagster_home" in p for p in places), "the Dagster storage was not searched"
    for value in values:
        for place, text in places.items():
            assert value not in text and quote(value) not in text, f"planted {value} found in {place}"


def quarantined(db_path: str, source: str) -> list[tuple[str, str]]:
    with duckdb.connect(db_path, read_only=True) as c:
        return c.execute("SELECT raw_body, reason FROM quarantine WHERE source = ? ORDER BY quarantined_at",
                         [source]).fetchall()


# -- email-requests ----------------------------------------------------------------------------------

def test_email_requests(local_stack, stack_env, logged):
    good = [{"request_id": f"good-{i}", "kind": "password-reset",
             "recipients": [{"email": f"reader{i}@example.org", "verified": True}],
             "context": {"n_hours": 2, "token": f"GoodResetToken{i:02d}xyz", "username": "reader"}} for i in range(8)]
    poison = poison_bodies()
    send("email-requests", [json.dumps(g) for g in good] + poison)
    drain(local_stack, "send_email_batch_job", "email-requests")

    got = sorted(m.rcpt_tos[0] for m in local_stack.smtp.wait_for(len(good)))
    assert got == sorted(f"reader{i}@example.org" for i in range(8))
    assert len(quarantined(stack_env["DUCKDB_PATH"], "email-requests")) == len(poison)
    assert queue_depth(local_stack, "email-requests") == 0
    # the reset tokens are in the emails sent, and nowhere else
    assert_found_nowhere(stack_env, logged, [*PLANTED.values(), *(g["context"]["token"] for g in good)])


# -- ses-notifications ---------------------------------------------------------------------------------

def test_ses_notifications(local_stack, stack_env, logged):
    db_path = stack_env["DUCKDB_PATH"]
    people = [f"good{i}@example.org" for i in range(10)]
    with database(db_path).connect() as conn:
        conn.executemany("INSERT INTO email_messages (request_id, to_address, kind, message_id, status, attempts, "
                         "sent_at) VALUES (?, ?, 'password-reset', ?, 'sent', 1, now())",
                         [(f"good-{i}", to, f"good-msg-{i}") for i, to in enumerate(people)])

    def signed(message: str) -> str:
        return json.dumps(notification_envelope(local_stack.signing, local_stack.topic_arn, message))

    good = [signed(ses_message("Delivery", f"good-msg-{i}", [to])) for i, to in enumerate(people)]
    # Signed, but refused by the parser: the kept envelope's Message loses its secret.
    odd = json.loads(ses_message("Bounce", "poison-signed", ["x@example.org"]))
    odd["bounce"]["bounceType"] = {"token": PLANTED["webhook"]}
    poison = [*poison_bodies(), signed(json.dumps(odd))]
    send("ses-notifications", good + poison)
    drain(local_stack, "ingest_ses_notifications_job", "ses-notifications",
          {"ops": {"drain_ses_notifications": {"config": {"wait_seconds": 1, "max_seconds": 60}}}})

    with duckdb.connect(db_path, read_only=True) as c:
        stored = {r[0] for r in c.execute("SELECT message_id FROM email_events WHERE NOT orphan").fetchall()}
    assert stored == {f"good-msg-{i}" for i in range(10)}
    kept = quarantined(db_path, "ses-notifications")
    assert len(kept) == len(poison)
    envelope = next(json.loads(body) for body, _ in kept if "poison-signed" in body)
    assert envelope["Signature"] == json.loads(poison[-1])["Signature"]   # kept verbatim for a replay
    assert queue_depth(local_stack, "ses-notifications") == 0
    assert_found_nowhere(stack_env, logged, PLANTED.values())


# -- stripe-events ---------------------------------------------------------------------------------------

def customer_event(i: int) -> dict:
    meta = {"billing_service": "pypi", "domain": "localhost"}
    return s.event("customer.created", s.customer(f"cus_good{i}", s.T0 + i, f"b{i}@example.org", metadata=meta),
                   s.T0 + i)


def test_stripe_events(local_stack, stack_env, logged):
    db_path = stack_env["DUCKDB_PATH"]
    source = stack_env["STRIPE_EVENTBRIDGE_SOURCES"].split(",")[0]
    secret = stack_env["STRIPE_WEBHOOK_SECRET"]
    good = [customer_event(i) for i in range(8)]
    sqs = local_stack.client("sqs")
    url = local_stack.queue_urls["stripe-events"]

    def send_webhook(evt: dict) -> None:
        body, attrs = s.webhook(evt, secret)
        sqs.send_message(QueueUrl=url, MessageBody=body,
                         MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attrs.items()})

    for evt in good[4:]:
        send_webhook(evt)
    # Signed and verified, then refused (no `created`): kept with its signature, its secret masked.
    with_secret = {**customer_event(90), "data": {"object": {"id": "pi_1", "object": "payment_intent",
                                                             "client_secret": PLANTED["webhook"]}}}
    del with_secret["created"]
    send_webhook(with_secret)
    # The same refusal without a secret: its kept copy is the original, and still verifies on replay.
    clean = customer_event(91)
    del clean["created"]
    send_webhook(clean)
    stranger = json.dumps({"source": "aws.partner/stripe.com/ed_stranger", "detail-type": "customer.created",
                           "detail": {**customer_event(92), "api_key": PLANTED["string"]}})
    poison = [*poison_bodies(), stranger]
    send("stripe-events", [s.eventbridge_body(e, source) for e in good[:4]] + poison)
    run_config = {"ops": {"drain_stripe_events": {"config": {"wait_seconds": 1, "max_seconds": 60}}}}
    instance = drain(local_stack, "ingest_stripe_events_job", "stripe-events", run_config)

    with duckdb.connect(db_path, read_only=True) as c:
        customers = {r[0] for r in c.execute("SELECT customer_id FROM stripe_customers").fetchall()}
    assert customers == {f"cus_good{i}" for i in range(8)}
    assert len(quarantined(db_path, "stripe-events")) == len(poison) + 2
    assert queue_depth(local_stack, "stripe-events") == 0

    # Replay: the masked webhook can no longer verify, and its result says why; the clean one verifies.
    from pipelines.definitions import defs
    assert defs.resolve_job_def("replay_stripe_quarantine_job").execute_in_process(instance=instance).success
    with duckdb.connect(db_path, read_only=True) as c:
        results = dict(c.execute("SELECT json_extract_string(raw_body, '$.body'), replay_result FROM quarantine "
                                 "WHERE raw_body LIKE '{\"sqs_message_attributes\"%'").fetchall())
    masked = next(r for body, r in results.items() if "pi_1" in body)
    unmasked = next(r for body, r in results.items() if "cus_good91" in body)
    assert masked.startswith("bad Stripe-Signature") and masked.endswith(REDACTED_COPY)
    assert unmasked == "event lacks created"
    assert_found_nowhere(stack_env, logged, PLANTED.values())
    assert os.environ["DAGSTER_HOME"] == stack_env["DAGSTER_HOME"]
