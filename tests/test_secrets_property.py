"""Property: a secret value planted anywhere in a body leaves no trace, on every consumer.

Each example plants one random value in a body (under a secret-named key at any depth, as a
string, a list or an object; inside a Python repr; in text that is not JSON; double-encoded;
URL-encoded; in a header-like line; as a secret-shaped value under an ordinary key), wraps the
body as each queue would carry it, and drains it with run_consumer into a real DuckDB file. The
value must be found nowhere: not in any table, not in the database file's bytes, not in any log
record of the run, not in the run's counters. (The Dagster run's event log and storage are
searched by tests/test_secrets_queues.py, on the real queues.)
"""

from __future__ import annotations

import json
import logging
import string
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlencode

import duckdb
import pytest
from hypothesis import given, strategies as st

from bench import stripe_samples as s
from pipelines.billing.consumer import StripeEventConsumer
from pipelines.billing.envelope import EnvelopeSettings
from pipelines.billing.ingest import IngestSettings
from pipelines.common.consumer import run_consumer
from pipelines.common.drain import DrainOptions
from pipelines.common.sns.cert_store import CertStore
from pipelines.common.sns.verify import SnsVerifier
from pipelines.email.builder import Builder
from pipelines.email.consumer import EmailRequestConsumer
from pipelines.email.sending import RetryPolicy, Sender
from pipelines.email_delivery.consumer import SesNotificationConsumer
from pipelines.schema import database
from pipelines.store.store import Store
from tests.fakes import RecordingTransport, sample_kinds, write_sample_templates
from tests.email_delivery.ses_helpers import TOPIC, write_identity

pytestmark = pytest.mark.long   # three consumers, the ci profile's examples

SECRET_KEYS = ["token", "password", "api_key", "client_secret", "Authorization", "X-Signature", "session_id",
               "AccessKey", "reset_token", "PASSWD", "auth", "cookie"]
HEADERS = ["Authorization", "X-Api-Key", "Cookie", "X-Auth-Token", "Proxy-Authorization"]
planted = st.text(string.ascii_letters + string.digits, min_size=20, max_size=32).map(lambda v: f"Pl4nt{v}")
noise = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                  st.text(string.ascii_letters + string.digits + " .-_/", max_size=12))
names = st.text(string.ascii_lowercase, min_size=1, max_size=8).filter(lambda k: not any(
    w in k for w in ("token", "passw", "secret", "key", "auth", "credential", "signature", "session", "cookie")))


@st.composite
def under_a_secret_key(draw, value: str):
    """A JSON-able structure with `value` under a secret key at a random depth, as a string, in a
    list or in an object."""
    key = draw(st.sampled_from(SECRET_KEYS))
    held = draw(st.sampled_from(["string", "list", "object", "deep"]))
    inner = {"string": value, "list": [draw(noise), value], "object": {draw(names): value},
             "deep": {draw(names): [{draw(names): value}]}}[held]
    node: object = {key: inner, **draw(st.dictionaries(names, noise, max_size=3))}
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            node = {draw(names): node, **draw(st.dictionaries(names, noise, max_size=2))}
        else:
            node = [draw(noise), node]
    return node


@st.composite
def planted_bodies(draw):
    """(value, body text, where)"""
    value = draw(planted)
    where = draw(st.sampled_from(["json", "repr", "double-encoded", "url-encoded-json", "url-form",
                                  "not-json", "header", "bearer", "shape"]))
    data = draw(under_a_secret_key(value))
    key = draw(st.sampled_from(SECRET_KEYS))
    if where == "json":
        body = json.dumps(data)
    elif where == "repr":
        body = repr(data)
    elif where == "double-encoded":
        body = json.dumps(json.dumps(data))
    elif where == "url-encoded-json":
        body = quote(json.dumps(data))
    elif where == "url-form":
        body = urlencode({draw(names): "x", key: value, "z": draw(names)})
    elif where == "not-json":
        sep = draw(st.sampled_from(["=", ": ", " = ", ":"]))
        body = f"{draw(names)} oops {{ {key}{sep}{value} ; tail {draw(names)}"
    elif where == "header":
        body = f"POST /hook HTTP/1.1\r\nHost: example.org\r\n{draw(st.sampled_from(HEADERS))}: {value}\r\n\r\n{{}}"
    elif where == "bearer":
        body = f"upstream said: Authorization: Bearer {value} (retry)"
    else:
        prefix = draw(st.sampled_from(["sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_"]))
        value = prefix + value
        body = json.dumps({draw(names): {draw(names): f"configured with {value}"}})
    return value, body, where


# ---- one consumer of each queue, on a real DuckDB file -------------------------------------------

class ListQueue:
    queue_name = "planted"

    def __init__(self, messages: list[dict]):
        self.pending = messages

    def receive(self, max_messages=10, wait_seconds=1):
        out, self.pending = self.pending[:max_messages], self.pending[max_messages:]
        return out

    def delete(self, handles):
        return []


def sqs(body: str, attributes: dict[str, str] | None = None) -> dict:
    return {"MessageId": str(uuid.uuid4()), "ReceiptHandle": uuid.uuid4().hex, "Body": body,
            "MessageAttributes": {k: {"DataType": "String", "StringValue": v} for k, v in (attributes or {}).items()}}


def _parsed(body: str) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return body


def email_messages(body: str, value: str) -> list[dict]:
    request = {"request_id": f"r-{uuid.uuid4().hex[:8]}", "kind": "password-reset",
               "recipients": [{"email": "reader@example.org", "verified": True}],
               "context": {"n_hours": 1, "token": value, "username": "u"}}
    bad_context = {**request, "request_id": f"r-{uuid.uuid4().hex[:8]}",
                   "context": {"n_hours": 1, "username": "u", "extra": _parsed(body)}}
    return [sqs(body), sqs(json.dumps(request)), sqs(json.dumps(bad_context))]


def ses_messages(body: str, value: str) -> list[dict]:
    envelope = {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": TOPIC, "Message": body,
                "Timestamp": "2026-11-01T12:00:00.000Z", "SignatureVersion": "1", "Signature": "bm90IGl0",
                "SigningCertURL": "https://sns.us-east-1.amazonaws.com/x.pem"}
    return [sqs(body), sqs(json.dumps(envelope))]


def stripe_messages(body: str, value: str) -> list[dict]:
    detail = s.event("customer.created", s.customer("cus_P", 1_790_000_000, "b@example.org"), 1_790_000_000)
    detail["data"]["object"]["metadata"] = {"note": body}
    envelope = {"source": "aws.partner/stripe.com/ed_unknown", "detail-type": "customer.created", "detail": detail}
    # A signed webhook is kept with its signature header (verbatim: it is no credential), body redacted.
    return [sqs(body), sqs(json.dumps(envelope)), sqs(body, {"Stripe-Signature": "t=1,v1=abc"})]


@pytest.fixture(scope="module")
def consumers(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    templates = write_sample_templates(root / "templates")
    kinds = sample_kinds()
    identity_dir = root / "certs"
    write_identity(identity_dir)
    made = {
        "email-requests": (EmailRequestConsumer(
            Builder(str(templates), kinds=kinds), Sender(RecordingTransport(), concurrency=2,
                                                          policy=RetryPolicy(base_delay=0)),
            default_sender="noreply@mailroom.test", transport_name="recording", kinds=kinds), email_messages),
        "ses-notifications": (SesNotificationConsumer(SnsVerifier([TOPIC], CertStore(identity_dir), max_age_seconds=0)),
                              ses_messages),
        "stripe-events": (StripeEventConsumer(IngestSettings(
            EnvelopeSettings.from_strings(s.SOURCE, "whsec_property", 300), "pypi", "pypi.org")), stripe_messages),
    }
    dbs = {source: database(str(root / f"{source}.duckdb")) for source in made}
    yield root, made, dbs
    made["email-requests"][0].close()


@contextmanager
def captured_logs():
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append   # type: ignore[method-assign]
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def everything_stored(path: Path) -> str:
    with duckdb.connect(str(path), read_only=True) as c:
        tables = [t[0] for t in c.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        dump = json.dumps({t: c.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}, default=str)
    files = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    return dump + files.decode("latin-1")


@pytest.mark.parametrize("source", ["email-requests", "ses-notifications", "stripe-events"])
@given(planted_bodies())
def test_a_planted_secret_leaves_no_trace(consumers, source, example):
    root, made, dbs = consumers
    consumer, messages_for = made[source]
    value, body, where = example
    db_path = root / f"{source}.duckdb"
    with captured_logs() as records, Store(dbs[source].connect, hold_seconds=0) as store:
        report = run_consumer(ListQueue(messages_for(body, value)), consumer, store,
                              DrainOptions(batch_size=10, max_seconds=30, receivers=1, deleters=0))
    assert report.counters["quarantined"] >= 1, (where, body)
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in records)
    for text, what in [(everything_stored(db_path), "DuckDB"), (logged, "the log"),
                       (json.dumps(report.as_metadata()), "the run's counters")]:
        assert value not in text, f"{source}: the value planted ({where}) reached {what}: {body!r}"
        assert value[5:17] not in text, f"{source}: part of the value planted ({where}) reached {what}"
