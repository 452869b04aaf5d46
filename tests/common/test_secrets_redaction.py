"""The kit's one redaction (pipelines/common/redaction.py), on bodies of every shape."""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

import pytest

from pipelines.billing.envelope import KEPT_REDACTION, kept_body
from pipelines.common.redaction import MAX_STORED_BODY, REDACTED, RedactionRules
from pipelines.email_delivery.consumer import SNS_REDACTION

SECRET = "Planted7Secret0Value9xyz"
RULES = RedactionRules(secret_names=frozenset({"reset_link"}))


def kept(body: str, rules: RedactionRules = RULES) -> str:
    return rules.body(body).text


@pytest.mark.parametrize("body", [
    json.dumps({"a": {"b": [{"token": SECRET}]}}),                          # string, deep
    json.dumps({"context": {"token": [SECRET, "other"]}}),                   # a list under the key
    json.dumps({"context": {"token": {"inner": {"x": SECRET}}}}),            # an object under the key
    json.dumps({"Authorization": SECRET}),
    json.dumps({"client_secret": SECRET, "n": 1}),
    json.dumps({"reset_link": SECRET}),                                      # the consumer's own secret name
    repr({"token": SECRET}),                                                 # a Python repr
    repr({"x": 1, "password": [SECRET, {"y": SECRET}]}),
    json.dumps(json.dumps({"context": {"token": [SECRET]}})),               # double-encoded
    json.dumps(json.dumps(json.dumps({"context": {"token": {"x": SECRET}}}))),  # triple
    '{"context": {"token": ["' + SECRET + '", ',                             # truncated JSON
    f"request_id=r-1 kind=password-reset token={SECRET}&next=1",            # key=value text
    f"secret: {SECRET}\npassword = x-{SECRET}",                              # key: value lines
    f"GET / HTTP/1.1\r\nX-Api-Key: {SECRET} trailing words\r\nHost: x",      # a header line, to its end
    f"Authorization: Bearer {SECRET}",
    f"curl -H 'authorization: Basic {SECRET}' https://x",
    f"charged with sk_live_{SECRET} today",                                  # shapes anywhere
    f"rk_test_{SECRET}", f"whsec_{SECRET}",
    urlencode({"a": "1", "token": SECRET}),                                  # URL-encoded
    quote(json.dumps({"context": {"token": [SECRET]}})),                     # a URL-encoded JSON body
    quote(quote(json.dumps({"password": SECRET}))),                          # twice
    json.dumps({"url": f"https://example.org/reset?token={SECRET}&x=1"}),
    json.dumps({"note": f"'api_key': '{SECRET}'"}),                           # single-quoted key in a string
    "[" * 5000 + json.dumps({"token": SECRET}),                              # too deep to parse
])
def test_the_planted_value_is_masked(body):
    out = kept(body)
    assert SECRET not in out and REDACTED in out


def test_aws_key_pair_is_masked_and_the_40_character_secret_beside_it():
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    out = kept(f"aws_access_key_id AKIAIOSFODNN7EXAMPLE then {secret} and a {'x' * 39}")
    assert "AKIAIOSFODNN7EXAMPLE" not in out and secret not in out and "x" * 39 in out


def test_a_value_found_once_is_masked_wherever_it_appears_in_any_encoding():
    value = "Sec/ret+Value 42"
    body = json.dumps({"token": value, "echo": f"see {quote(value, safe='')} and {value}"})
    out = kept(body)
    assert value not in out and quote(value, safe="") not in out


def test_nothing_secret_keeps_the_body_byte_for_byte():
    for body in ['{"b": 1,   "a": [true, null]}', "not json at all", json.dumps({"token": None}),
                 json.dumps({"request": {"idempotency_key": "key-1"}})]:
        assert kept(body) == body


def test_json_stays_json_with_its_structure():
    body = {"kind": "password-reset", "context": {"token": SECRET, "username": "u", "n": True}}
    assert json.loads(kept(json.dumps(body)))["context"] == {"token": REDACTED, "username": "u", "n": True}


def test_over_the_size_limit_only_size_and_digest():
    out = kept("x" * MAX_STORED_BODY + SECRET)
    assert out.startswith(f"[body not kept: {MAX_STORED_BODY + len(SECRET)} bytes, sha256 ") and SECRET not in out


def test_free_text_loses_found_values_and_shapes_but_prose_stays():
    reason = f"bad Stripe-Signature: no match for {SECRET} with sk_test_{SECRET[:6]}abc"
    out = RULES.text(reason, [SECRET], pairs=False)
    assert out.startswith("bad Stripe-Signature: no match for ") and SECRET not in out and "sk_test_" not in out
    assert RULES.text(f"smtp said: password={SECRET}") == f"smtp said: password={REDACTED}"


def test_message_signatures_stay_verbatim_but_nothing_else_does():
    envelope = {"Type": "Notification", "Signature": "c2lnbmF0dXJl", "SignatureVersion": "1",
                "Message": json.dumps({"mail": {"token": SECRET}})}
    out = json.loads(kept(json.dumps(envelope), SNS_REDACTION))
    assert out["Signature"] == "c2lnbmF0dXJl" and out["SignatureVersion"] == "1"
    assert SECRET not in out["Message"] and json.loads(out["Message"]) == {"mail": {"token": REDACTED}}
    # a nested "Signature" is no envelope's: masked
    assert SECRET not in kept(json.dumps({"x": {"Signature": SECRET}}), SNS_REDACTION)


def test_a_kept_stripe_webhook_keeps_its_signature_and_loses_its_secrets():
    event = json.dumps({"id": "evt_1", "data": {"object": {"client_secret": SECRET}}})
    wrapped = kept_body(event, {"Stripe-Signature": "t=1,v1=abc"})
    out = json.loads(KEPT_REDACTION.body(wrapped).text)
    assert out["sqs_message_attributes"] == {"Stripe-Signature": "t=1,v1=abc"}
    assert SECRET not in out["body"] and json.loads(out["body"])["data"]["object"]["client_secret"] == REDACTED
    clean = kept_body(json.dumps({"id": "evt_2"}), {"Stripe-Signature": "t=1,v1=abc"})
    assert KEPT_REDACTION.body(clean).text == clean
