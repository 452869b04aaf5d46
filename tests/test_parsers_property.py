"""Property tests: every parser accepts or refuses with a reason, and nothing else.

For each parser (email request; SNS envelope + signature; SES payload) real payloads are
mutated at every path (tests/strategies.py), and arbitrary, huge and deeply nested bodies are
fed in. A refusal must be the parser's own exception with a reason; what is accepted must then
go through the same writes a run makes (the ledger claim, the event commit, the quarantine
insert) in a real DuckDB without an error. Any other exception fails the test, and Hypothesis
prints the blob to replay it.

Profiles: "ci" (default, 200 examples a test: 400-600 per parser), "deep" (HYPOTHESIS_PROFILE=deep,
2,000 a test: 4,000-8,000 per parser).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.samples import sample_context
from devstack.sns_signer import generate_signing_identity, notification_envelope, sns_timestamp
from pipelines.common.queue_message import QueueMessage
from pipelines.common.quarantine import Quarantined, quarantine
from pipelines.common.sns.cert_store import CertStore
from pipelines.common.sns.verify import SnsVerifier, VerificationError
from pipelines.email.consumer import EmailRequestConsumer
from pipelines.email.builder import Builder
from pipelines.email.catalogue import catalogue
from pipelines.email.sending import Sender
from pipelines.email_delivery.consumer import SesNotificationConsumer
from pipelines.email_delivery.ses_parse import ParseError
from pipelines.schema import ALL_DDL
from pipelines.store.transaction import transaction
from tests.fakes import RecordingTransport
from tests.email_delivery.ses_helpers import FIXTURES, PINNED_CERTS, TOPIC, fixture_json
from tests.strategies import as_body, garbage_bodies, huge_or_deep_bodies, mutations_of


def few() -> settings:
    """Huge bodies cost more each: a tenth of the profile's examples (at least 30)."""
    return settings(max_examples=max(10, settings().max_examples // 10))


@lru_cache(maxsize=1)
def db() -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect(":memory:")
    for ddl in ALL_DDL:
        conn.execute(ddl)
    return conn


def assert_reason(reason: object) -> None:
    assert isinstance(reason, str) and reason.strip(), f"refusal without a reason: {reason!r}"
    assert len(reason) < 2000, "a reason must not carry the body"
    reason.encode("utf-8")   # storable


def write(commit, quarantined: list[Quarantined]) -> None:
    """A batch's commit and its quarantine rows in one transaction, as the consumer kit does;
    the quarantine rows are removed afterwards so every example starts alike."""
    with transaction(db()) as conn:
        commit(conn)
        quarantine(conn, quarantined)
    db().execute("DELETE FROM quarantine")


# -- email requests ------------------------------------------------------------------------------

KINDS = catalogue()


@lru_cache(maxsize=1)
def email_handler() -> EmailRequestConsumer:
    return EmailRequestConsumer(Builder(kinds=KINDS), Sender(RecordingTransport(), concurrency=1),
                                default_sender="noreply@mailroom.test", transport_name="property", kinds=KINDS)


def email_samples() -> list[dict]:
    picks = ["password-reset", "verify-email", "two-factor-added", "unrecognized-login", "payment-failed",
             "added-as-collaborator"]
    samples = []
    for i, kind in enumerate(picks):
        sample = {"request_id": f"prop-{i}", "kind": kind, "context": sample_context(KINDS[kind]),
                  "recipients": [{"email": f"user{i}@example.org", "verified": True, "user_id": i, "name": "Zoë",
                                  "username": f"user{i}", "acting_user": True},
                                 {"email": None, "verified": False}]}
        if i % 2:
            sample.update(sender="Mailroom <noreply@example.org>", repeat_window="2h", remote_ip="203.0.113.9")
        samples.append(sample)
    return samples


EMAIL_SAMPLES = email_samples()


def email_outcome(body: str | bytes) -> str:
    """The consumer's own steps, as the kit calls them but without its safety net: prepare (parse,
    header checks, subject render, plan, redaction of what is refused), then commit (the reused-id
    check and the ledger claim) and the quarantine write, in one transaction."""
    text = body if isinstance(body, str) else body.decode("utf-8", "surrogateescape")   # as SQS hands it over
    consumer = email_handler()
    prepared = consumer.prepare([QueueMessage("sqs-property", "rh", text)])
    write(lambda conn: consumer.commit(conn, prepared), prepared.quarantined)
    reason = prepared.outcomes["sqs-property"]
    if reason is None:
        return "accepted"
    assert_reason(reason)
    return "refused"


def test_email_samples_are_accepted():
    assert [email_outcome(as_body(s)) for s in EMAIL_SAMPLES] == ["accepted"] * len(EMAIL_SAMPLES)


@given(st.sampled_from(EMAIL_SAMPLES).flatmap(mutations_of))
def test_email_request_mutations(payload):
    email_outcome(as_body(payload))


@given(garbage_bodies())
def test_email_request_garbage(body):
    assert email_outcome(body) == "refused"


@few()
@given(huge_or_deep_bodies())
def test_email_request_huge_or_deep(body):
    assert email_outcome(body) == "refused"


# -- SNS envelopes and SES payloads ----------------------------------------------------------------

IDENTITY = generate_signing_identity()
REAL_ENVELOPES = [fixture_json(p.name) for p in sorted(FIXTURES.glob("sns_*.json"))]
SQS_BODIES = [json.loads(r["body"]) for p in sorted(FIXTURES.glob("sqs_lambda-event_*.json"))
              for r in fixture_json(p.name)["Records"]]
# Some samples are the Message string itself: all as objects here.
SES_PAYLOADS = [v if isinstance(v, dict) else json.loads(v)
                for v in (fixture_json(p.name) for p in sorted(FIXTURES.glob("ses-*.json")))]


@lru_cache(maxsize=2)
def ingestor(accept_raw: bool) -> SesNotificationConsumer:
    certs = Path(tempfile.mkdtemp(prefix="property-certs-"))
    for pem in PINNED_CERTS.glob("*.pem"):
        shutil.copy(pem, certs / pem.name)
    (certs / IDENTITY.cert_name).write_bytes(IDENTITY.cert_pem)
    topics = {TOPIC, *(e["TopicArn"] for e in REAL_ENVELOPES + SQS_BODIES)}
    # max_age 0: the real samples are years old; the age check is tested in test_ses_verify.py
    return SesNotificationConsumer(SnsVerifier(topics, CertStore(certs), max_age_seconds=0), accept_raw=accept_raw)


def ses_outcome(body: str | bytes, accept_raw: bool = False) -> str:
    """Verify + parse (what the verify workers run) must accept or refuse; then the consumer's
    prepare and commit, with the quarantine write, as a run makes them."""
    text = body if isinstance(body, str) else body.decode("utf-8", "surrogateescape")
    ing = ingestor(accept_raw)
    msg = QueueMessage("sqs-property", "rh", text)
    try:
        events, _ = ing.examiner.examine(msg)
    except (ParseError, VerificationError) as exc:
        assert type(exc) in (ParseError, VerificationError)
        assert_reason(str(exc))
        events = []
    prepared = ing.prepare([msg])
    assert prepared.events.num_rows == len(events)
    write(lambda conn: ing.commit(conn, prepared), prepared.quarantined)
    reason = prepared.outcomes["sqs-property"]
    if reason is None:
        return "accepted"
    assert_reason(reason)
    return "refused"


def signed_body(message: object) -> str:
    text = message if isinstance(message, str) else json.dumps(message)
    try:
        envelope = notification_envelope(IDENTITY, TOPIC, text, timestamp=sns_timestamp())
    except UnicodeEncodeError:   # a lone surrogate cannot be signed: sent with another text's signature
        envelope = {**notification_envelope(IDENTITY, TOPIC, "x", timestamp=sns_timestamp()), "Message": text}
    return json.dumps(envelope)


def test_real_envelopes_and_payloads_are_accepted():
    real_ses = [fixture_json(p.name) for p in sorted(FIXTURES.glob("sns_notification_ses-*.verified.json"))]
    assert len(real_ses) == 2
    assert [ses_outcome(json.dumps(e)) for e in real_ses] == ["accepted", "accepted"]
    assert [ses_outcome(signed_body(p)) for p in SES_PAYLOADS] == ["accepted"] * len(SES_PAYLOADS)
    assert [ses_outcome(json.dumps(p), accept_raw=True) for p in SES_PAYLOADS] == ["accepted"] * len(SES_PAYLOADS)


@given(st.sampled_from(REAL_ENVELOPES + SQS_BODIES).flatmap(mutations_of))
def test_sns_envelope_mutations(envelope):
    ses_outcome(as_body(envelope))


@given(st.sampled_from(SES_PAYLOADS).flatmap(mutations_of))
def test_ses_payload_mutations_signed(payload):
    ses_outcome(signed_body(payload))


@given(st.sampled_from(SES_PAYLOADS).flatmap(mutations_of))
def test_ses_payload_mutations_raw_delivery(payload):
    ses_outcome(as_body(payload), accept_raw=True)


@given(garbage_bodies())
def test_sns_garbage_bodies(body):
    assert ses_outcome(body) == "refused"


@given(garbage_bodies())
def test_ses_garbage_messages_signed(message):
    text = message if isinstance(message, str) else message.decode("utf-8", "surrogateescape")
    ses_outcome(signed_body(text))


@few()
@given(huge_or_deep_bodies())
def test_sns_huge_or_deep(body):
    assert ses_outcome(body) == "refused"


@few()
@given(huge_or_deep_bodies())
def test_ses_huge_or_deep_messages_signed(message):
    assert ses_outcome(signed_body(message)) == "refused"
