"""Sensitive context values never reach DuckDB, logs, Dagster metadata or error messages."""

import json
import logging

import dagster as dg
import duckdb

from pipelines.common.queue_message import QueueMessage
from pipelines.email.consumer import EmailRequestConsumer
from pipelines.email.builder import Builder
from pipelines.email.redaction import REDACTED, Redactor, keep_remote_ip, redact_raw_body
from pipelines.email.sending import RetryPolicy, Sender
from tests.fakes import BatchDriver, sample_kinds, write_sample_templates
from pipelines.schema import database
from resources.outgoing_email import PermanentSendError

SECRET = "tok-Very-Secret-4242"


def dump_all_tables(path) -> str:
    with duckdb.connect(str(path), read_only=True) as c:
        tables = [t[0] for t in c.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        return json.dumps({t: c.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}, default=str)


def test_redactor_and_ip_rule():
    r = Redactor([SECRET, "abc", None])
    assert r(f"x {SECRET} y") == f"x {REDACTED} y"
    assert r("abc stays: too short to redact safely") == "abc stays: too short to redact safely"
    assert keep_remote_ip("203.0.113.1", True) == "203.0.113.1" and keep_remote_ip("203.0.113.1", False) is None


def test_quarantined_bodies_are_redacted():
    parsed = json.loads(redact_raw_body(json.dumps({"kind": "password-reset", "context": {"token": SECRET,
                                                                                            "username": "u"}})))
    assert parsed["context"] == {"token": REDACTED, "username": "u"}
    unknown_kind = redact_raw_body(json.dumps({"kind": "nope", "context": {"invoice_url": SECRET}}))
    assert SECRET not in unknown_kind
    broken = redact_raw_body('{"kind": "password-reset", "context": {"token": "' + SECRET + '", ')
    assert SECRET not in broken and "password-reset" in broken


class LeakyTransport:
    """Echoes the whole message in its error, like a chatty relay might."""

    def send(self, email):
        raise PermanentSendError("554 rejected: " + email.raw.decode())

    def max_send_rate(self):
        return None


def test_errors_and_ledger_never_hold_secrets(tmp_path, caplog):
    write_sample_templates(tmp_path / "t")
    db = database(str(tmp_path / "r.duckdb"))
    kinds = sample_kinds()
    h = BatchDriver(db.connect, EmailRequestConsumer(
        Builder(str(tmp_path / "t"), kinds=kinds),
        Sender(LeakyTransport(), concurrency=2, policy=RetryPolicy(base_delay=0)),
        default_sender="noreply@mailroom.test", transport_name="leaky", kinds=kinds))
    good = {"request_id": "r1", "kind": "password-reset", "recipients": [{"email": "a@x.org", "verified": True}],
            "context": {"n_hours": 1, "token": SECRET, "username": "u"}}
    bad = {**good, "request_id": "r2", "recipients": [{"email": "not an address", "verified": True}]}
    caplog.set_level(logging.DEBUG)
    h.handle([QueueMessage("m1", "h1", json.dumps(good)), QueueMessage("m2", "h2", json.dumps(bad)),
              QueueMessage("m3", "h3", json.dumps(good)[:-20])])
    everything = dump_all_tables(tmp_path / "r.duckdb")
    assert "554 rejected" in everything and REDACTED in everything
    assert SECRET not in everything
    assert SECRET not in caplog.text
    assert SECRET not in json.dumps(h.stats.as_metadata())


def test_dagster_run_keeps_secrets_out_of_events_and_store(local_stack, stack_env):
    from pipelines.definitions import defs
    from pipelines.email.dispatch import dispatch

    dispatch("password-reset", [{"email": "smtp-550@example.org", "verified": True},
                                {"email": "ok@example.org", "verified": True}],
             {"n_hours": 2, "token": SECRET, "username": "u"}, request_id="red-1")
    from resources.aws import SQSQueueResource
    SQSQueueResource(queue_name="email-requests", region_name="us-east-1").send(
        [json.dumps({"request_id": "red-2", "kind": "nope", "recipients": [{"email": "a@b.c", "verified": True}],
                     "context": {"token": SECRET}})])
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("send_email_batch_job").execute_in_process(instance=instance)
    assert result.success
    out = result.output_for_node("send_email_batch")
    assert out["sent"] == 1 and out["failed"] == 1 and out["quarantined"] == 1
    events = instance.all_logs(result.run_id)
    text = json.dumps([str(e.user_message) + str(e.dagster_event) for e in events])
    assert "sent" in text and SECRET not in text
    assert SECRET not in dump_all_tables(stack_env["DUCKDB_PATH"])
    assert SECRET in local_stack.smtp.wait_for(1)[0].raw.decode()   # the email itself does carry it


def test_unexpected_planning_error_quarantines_without_leaking(tmp_path, caplog):
    write_sample_templates(tmp_path / "t")
    db = database(str(tmp_path / "u.duckdb"))
    kinds = sample_kinds()

    class Exploding(Builder):
        def render_subject(self, kind, ctx):
            raise RuntimeError(f"boom with {ctx.get('token')}")

    h = BatchDriver(db.connect, EmailRequestConsumer(
        Exploding(str(tmp_path / "t"), kinds=kinds), Sender(LeakyTransport(), concurrency=1),
        default_sender="noreply@mailroom.test", transport_name="x", kinds=kinds))
    good = {"request_id": "r1", "kind": "password-reset", "recipients": [{"email": "a@x.org", "verified": True}],
            "context": {"n_hours": 1, "token": SECRET, "username": "u"}}
    caplog.set_level(logging.DEBUG)
    h.handle([QueueMessage("m1", "h1", json.dumps(good))])
    with db.connect() as c:
        assert c.execute("SELECT reason FROM quarantine").fetchall() == [
            ("internal error: RuntimeError",)]
    assert SECRET not in dump_all_tables(tmp_path / "u.duckdb") and SECRET not in caplog.text
