"""Email requests that cannot be real are refused with a reason naming the field; nothing raises,
nothing unstorable reaches DuckDB, a reused request_id with other content is quarantined, and
quarantined bodies keep no secret even when their structure cannot be trusted."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from pipelines.common.queue_message import QueueMessage
from pipelines.email.consumer import EmailRequestConsumer
from pipelines.email.builder import Builder
from pipelines.email.redaction import REDACTED, redact_raw_body
from pipelines.email.request import BadRequest, parse_request
from pipelines.email.sending import RetryPolicy, Sender
from pipelines.schema import database
from tests.fakes import BatchDriver, RecordingTransport, sample_kinds, write_sample_templates

SECRET = "tok-Poison-Secret-9911"


def body(**over):
    base = {"request_id": "r-1", "kind": "password-reset",
            "recipients": [{"email": "alice@example.org", "verified": True, "name": "Alice"}],
            "context": {"n_hours": 6, "token": SECRET, "username": "alice"}}
    base.update(over)
    return base


def recipient(**over):
    return [{"email": "alice@example.org", "verified": True, **over}]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("raw, reason", [
    (body(request_id="r-1\n"), "invalid request_id"),
    (body(request_id="r\x00-1"), "invalid request_id"),
    (body(kind="password-reset\n"), "invalid kind"),
    (body(recipients=recipient(email="a" * 65 + "@example.org")), "malformed address in recipients/0"),
    (body(recipients=recipient(email="a" * 300 + "@example.org")), "recipients/0"),
    (body(recipients=recipient(email="alice@example.org\n")), "malformed address in recipients/0"),
    (body(recipients=recipient(email="al\x00ice@example.org")), "recipients/0/email"),
    (body(recipients=recipient(name="Al\x00ice")), "recipients/0/name"),
    (body(recipients=recipient(name="Al\x7fice")), "invalid recipients/0/name: control character"),
    (body(recipients=recipient(user_id="u\x00")), "recipients/0/user_id"),
    (body(context={"n_hours": 6, "token": "t\x00k", "username": "a"}), "context/token"),
    (body(sender="Mailroom\x00 <noreply@example.org>"), "sender"),
    (body(sender="a@example.org, b@example.org"), "malformed address in sender: more than one address"),
    (body(sender="Two <a@example.org>, <b@example.org>"), "malformed address in sender"),
    (body(repeat_window="999999999d"), "invalid repeat_window: over 366 days"),
    (body(repeat_window="9999999999999999d"), "invalid repeat_window"),
    (body(repeat_window="15m\n"), "invalid repeat_window"),
    (json.dumps(body(request_id="x")).replace('"x"', '"\\ud800"'), "invalid JSON"),
    ('{"request_id": "\ud800"}', "invalid JSON"),
    ({"Type": []}, "missing field"),
    (nested(100_000), "invalid JSON"),
    (nested(500), "not a JSON object"),
    ('{"request_id": ' + nested(500) + "}", "invalid request_id/0/0/0/0/0/0/0/0: nested deeper than 8 levels"),
    (body(context={"n_hours": 6, "token": "t", "username": json.loads(nested(20))}), "context/username"),
    ('{"request_id": "' + "x" * 300_000 + '"}', "body too large"),
    ("\x00", "invalid JSON"),
    (b"\xff\xfe", "invalid JSON"),
])
def test_refused_with_a_reason(raw, reason):
    with pytest.raises(BadRequest) as exc:
        parse_request(raw if isinstance(raw, (str, bytes)) else json.dumps(raw))
    assert reason in exc.value.reason
    if not isinstance(raw, (str, bytes)):   # the dispatch path takes a dict: the same refusal
        with pytest.raises(BadRequest) as direct:
            parse_request(raw)
        assert direct.value.reason


@pytest.mark.parametrize("data, reason", [
    (body(request_id="\ud800"), "invalid request_id: control character or lone surrogate"),
    (body(context={"n_hours": 6, "token": "tok", "username": "\udfff"}), "invalid context/username"),
    (body(context={"n_hours": 6, "token": "tok", "\ud800": "x"}), "invalid key at context"),
    (body(context={"n_hours": float("nan"), "token": "tok", "username": "a"}), "invalid context/n_hours"),
])
def test_refused_when_passed_as_a_dict(data, reason):
    """dispatch() hands parse_request a dict that never went through a JSON decoder."""
    with pytest.raises(BadRequest) as exc:
        parse_request(data)
    assert reason in exc.value.reason


def test_nul_in_a_subject_variable_is_refused_before_any_header(tmp_path):
    write_sample_templates(tmp_path / "t")
    kinds = sample_kinds()
    builder = Builder(str(tmp_path / "t"), kinds=kinds)
    with pytest.raises(BadRequest, match="invalid context/username: control character"):
        parse_request(body(context={"n_hours": 6, "token": "t", "username": "ali\x00ce"}), kinds)
    # A tab or a C1 control passes as body text, but not into a header; a NUL is stopped even
    # if a request were built without parse_request.
    for value in ("alice\tb", "alice\x9bb", "ali\x00ce"):
        request = replace(parse_request(body(), kinds), context={"n_hours": 6, "token": "t", "username": value})
        with pytest.raises(BadRequest, match="invalid subject variable 'username': control character"):
            builder.check_headers(request)


def test_real_values_still_pass():
    r = parse_request(body(recipients=recipient(email="a" * 64 + "@example.org", name="Zoë Ünicode"),
                           sender="Mailroom <noreply@example.org>", repeat_window="366d",
                           context={"n_hours": 6, "token": "line one\nline two", "username": "alice"}))
    assert r.recipients[0].email == "a" * 64 + "@example.org" and r.repeat_window.days == 366
    assert r.digest and r.digest == parse_request(r.to_json()).digest


def test_digest_follows_kind_recipients_and_context_only():
    a = parse_request(body())
    assert parse_request(body(request_id="other")).digest == a.digest
    assert parse_request(body(recipients=recipient(email="bob@example.org"))).digest != a.digest
    assert parse_request(body(context={"n_hours": 7, "token": SECRET, "username": "alice"})).digest != a.digest


# -- the batch: poison beside good requests ----------------------------------------------------------

def handler(tmp_path):
    write_sample_templates(tmp_path / "t")
    kinds = sample_kinds()
    db = database(str(tmp_path / "p.duckdb"))
    transport = RecordingTransport()
    h = BatchDriver(db.connect, EmailRequestConsumer(
        Builder(str(tmp_path / "t"), kinds=kinds), Sender(transport, concurrency=2, policy=RetryPolicy(base_delay=0)),
        default_sender="noreply@mailroom.test", transport_name="rec", kinds=kinds))
    return h, db, transport


POISON = [
    nested(50_000),
    json.dumps(body(request_id="p-surrogate")).replace("alice@example.org", "\\ud800@example.org"),
    json.dumps(body(request_id="p-kind")).replace('"password-reset"', '"pass\\ud800"'),
    json.dumps(body(request_id="p-window", repeat_window="999999999d")),
    json.dumps(body(request_id="p-newline\n")),
    json.dumps(body(request_id="p-nul", sender="Me\x00 <me@example.org>")),
    "\ud800 not json at all token=" + SECRET,
    json.dumps({"Type": []}),
    json.dumps(body(request_id="p-bounce", recipients=[{"email": ["a@example.org"], "verified": True}])),
]


def test_poison_beside_good_requests_in_one_batch(tmp_path):
    h, db, transport = handler(tmp_path)
    good = [json.dumps(body(request_id=f"g-{i}", recipients=recipient(email=f"user{i}@example.org")))
            for i in range(3)]
    msgs = [QueueMessage(f"m{i}", f"h{i}", b) for i, b in enumerate(POISON[:2] + good[:1] + POISON[2:] + good[1:])]
    h.handle(msgs)
    assert sorted(e.recipient for e in transport.sent) == ["user0@example.org", "user1@example.org",
                                                           "user2@example.org"]
    with db.connect() as c:
        rows = c.execute("SELECT sqs_message_id, reason, raw_body FROM quarantine").fetchall()
    assert len(rows) == len(POISON) and all(reason for _, reason, _ in rows)
    assert not any(SECRET in raw for _, _, raw in rows)
    assert h.stats["quarantined"] == len(POISON) and h.stats["sent"] == 3


def test_reused_request_id_with_other_content_is_quarantined(tmp_path):
    h, db, transport = handler(tmp_path)
    first = json.dumps(body(request_id="dup"))
    h.handle([QueueMessage("m1", "h1", first)])
    other_kind = json.dumps(body(request_id="dup", kind="two-factor-added",
                                 context={"method": "totp", "username": "alice"}))
    other_recipients = json.dumps(body(request_id="dup", recipients=recipient(email="eve@example.org")))
    other_context = json.dumps(body(request_id="dup", context={"n_hours": 1, "token": SECRET, "username": "x"}))
    h.handle([QueueMessage("m2", "h2", first), QueueMessage("m3", "h3", other_kind),
              QueueMessage("m4", "h4", other_recipients), QueueMessage("m5", "h5", other_context)])
    # ...and within one batch, before anything is stored: the first copy wins, the other is refused
    h.handle([QueueMessage("m6", "h6", json.dumps(body(request_id="new", recipients=recipient(email="n@example.org")))),
              QueueMessage("m7", "h7", json.dumps(body(request_id="new", recipients=recipient(email="o@example.org"))))])
    assert [e.recipient for e in transport.sent] == ["alice@example.org", "n@example.org"]
    with db.connect() as c:
        quarantined = c.execute("SELECT sqs_message_id, reason, raw_body FROM quarantine ORDER BY 1").fetchall()
        ledger = c.execute("SELECT request_id, to_address, request_digest IS NOT NULL FROM email_messages "
                           "ORDER BY 1, 2").fetchall()
    assert [(q[0], q[1]) for q in quarantined] == [(m, "request_id reused with different content")
                                                   for m in ("m3", "m4", "m5", "m7")]
    assert not any(SECRET in q[2] for q in quarantined)
    assert ledger == [("dup", "alice@example.org", True), ("new", "n@example.org", True)]
    assert h.stats["already_recorded"] == 1    # the identical copy: a no-op


def test_ledger_rows_without_a_digest_match_anything(tmp_path):
    h, db, transport = handler(tmp_path)
    h.handle([QueueMessage("m1", "h1", json.dumps(body(request_id="old")))])
    with db.connect() as c:
        c.execute("UPDATE email_messages SET request_digest = NULL")
    h.handle([QueueMessage("m2", "h2", json.dumps(body(request_id="old", recipients=recipient(email="b@example.org"))))])
    assert len(transport.sent) == 2


# -- redaction when the structure cannot be trusted -------------------------------------------------

REQUEST = body()


@pytest.mark.parametrize("raw", [
    json.dumps(json.dumps(REQUEST)),                                   # double-encoded
    json.dumps(json.dumps(json.dumps(REQUEST))),                       # triple
    json.dumps({"request_id": "x", "context": json.dumps(REQUEST["context"])}),   # context as a string
    json.dumps(REQUEST)[:-30],                                         # truncated JSON
    "request_id=r-1 kind=password-reset token=" + SECRET + "&next=1",  # not JSON: key=value
    "token: " + SECRET + "\npassword = hunter2-" + SECRET,             # not JSON: headers-like
    json.dumps({"kind": "nope", "context": {"api_key": SECRET, "nested": {"client_secret": SECRET}}}),
    json.dumps({"x": f"https://example.org/reset?token={SECRET}"}),
    "[" * 5000 + json.dumps(REQUEST),                                  # too deep to parse
])
def test_secrets_masked_in_untrusted_bodies(raw):
    kept = redact_raw_body(raw, sample_kinds())
    assert SECRET not in kept and REDACTED in kept


def test_redaction_keeps_structure_and_storability():
    kept = json.loads(redact_raw_body(json.dumps(REQUEST), sample_kinds()))
    assert kept["context"] == {"n_hours": 6, "token": REDACTED, "username": "alice"}
    assert kept["recipients"] == REQUEST["recipients"]
    assert redact_raw_body("\ud800 x", sample_kinds()) == "\\ud800 x"
    big = redact_raw_body("x" * 300_000 + SECRET, sample_kinds())
    assert big.startswith("[body not kept: 300022 bytes, sha256 ") and SECRET not in big
