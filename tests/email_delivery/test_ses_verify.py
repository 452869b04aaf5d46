"""SNS signature verification: real AWS-signed samples, locally signed envelopes, every refusal."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from devstack.sns_signer import confirmation_envelope, notification_envelope, sign_envelope, sns_timestamp
from pipelines.common.sns.cert_store import CertificateError, CertStore, check_cert_url
from pipelines.common.sns.verify import SnsVerifier, VerificationError
from tests.email_delivery.ses_helpers import FIXTURES, PINNED_CERTS, TOPIC, fixture_json, write_identity

REAL = sorted(p.name for p in FIXTURES.glob("sns_*.verified.json"))
EXAMPLES = sorted(p.name for p in FIXTURES.glob("sns_*.awsdocs.json"))


def test_all_seven_real_aws_signatures_verify_with_pinned_certs():
    assert len(REAL) == 7
    envelopes = [fixture_json(n) for n in REAL]
    verifier = SnsVerifier([e["TopicArn"] for e in envelopes], CertStore(PINNED_CERTS), max_age_seconds=0)
    versions = set()
    for env in envelopes:
        verifier.verify(env)
        versions.add(env["SignatureVersion"])
    assert versions == {"1", "2"}
    # Two certificates served at three URLs (two regions): each URL loaded once.
    assert verifier.certs.loads == len({e["SigningCertURL"] for e in envelopes}) == 3


@pytest.mark.parametrize("name", REAL)
def test_real_sample_with_one_changed_character_is_refused(name):
    env = fixture_json(name)
    env["Message"] = env["Message"] + " "
    verifier = SnsVerifier([env["TopicArn"]], CertStore(PINNED_CERTS), max_age_seconds=0)
    with pytest.raises(VerificationError, match="does not verify"):
        verifier.verify(env)


@pytest.mark.parametrize("name", EXAMPLES)
def test_awsdocs_example_signatures_are_refused_even_with_a_certificate_present(name, tmp_path):
    env = fixture_json(name)
    basename = env["SigningCertURL"].rsplit("/", 1)[1]
    (tmp_path / basename).write_bytes((PINNED_CERTS / "SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem").read_bytes())
    verifier = SnsVerifier([env["TopicArn"]], CertStore(tmp_path), max_age_seconds=0)
    with pytest.raises(VerificationError, match="not base64|does not verify"):
        verifier.verify(env)


@pytest.fixture
def verifier(tmp_path, identity):
    return SnsVerifier([TOPIC], CertStore(tmp_path / "certs"), max_age_seconds=3600)


def _envelopes(identity, version):
    return [
        notification_envelope(identity, TOPIC, '{"notificationType":"Delivery"}', version=version),
        notification_envelope(identity, TOPIC, "with subject", version=version, subject="Hello"),
        confirmation_envelope(identity, TOPIC, version=version),
        confirmation_envelope(identity, TOPIC, unsubscribe=True, version=version),
    ]


@pytest.mark.parametrize("version", ["1", "2"])
def test_locally_signed_envelopes_of_all_three_types_verify(verifier, identity, version):
    for env in _envelopes(identity, version):
        verifier.verify(env)
    assert verifier.certs.loads == 1


@pytest.mark.parametrize("version", ["1", "2"])
def test_tampering_with_any_signed_field_is_refused(verifier, identity, version):
    for env in _envelopes(identity, version):
        signed_fields = [k for k in ("Message", "MessageId", "Subject", "SubscribeURL", "Token", "Timestamp")
                         if k in env]
        for field in signed_fields:
            bad = dict(env)
            bad[field] = (sns_timestamp(datetime.now(timezone.utc) - timedelta(seconds=5))
                          if field == "Timestamp" else env[field] + "x")
            with pytest.raises(VerificationError, match="does not verify"):
                verifier.verify(bad)
        # Type is signed too: relabelling a confirmation as the other confirmation type.
        if env["Type"] != "Notification":
            bad = dict(env, Type="UnsubscribeConfirmation" if env["Type"] == "SubscriptionConfirmation"
                       else "SubscriptionConfirmation")
            with pytest.raises(VerificationError, match="does not verify"):
                verifier.verify(bad)
        # Adding a Subject that was not signed changes the canonical string.
        if env["Type"] == "Notification" and "Subject" not in env:
            with pytest.raises(VerificationError, match="does not verify"):
                verifier.verify(dict(env, Subject="added"))


def test_signature_of_one_version_presented_as_the_other_is_refused(verifier, identity):
    env = notification_envelope(identity, TOPIC, "m", version="1")
    with pytest.raises(VerificationError, match="does not verify"):
        verifier.verify(dict(env, SignatureVersion="2"))


def test_wrong_topic_is_refused_even_when_correctly_signed(verifier, identity):
    other = "arn:aws:sns:us-east-1:123456789012:someone-else"
    env = notification_envelope(identity, other, "m")
    with pytest.raises(VerificationError, match="allow-list"):
        verifier.verify(env)


@pytest.mark.parametrize("url,reason", [
    ("https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-x.pem", "not an SNS host"),
    ("http://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem", "not https"),
    ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.txt", "not a .pem"),
    ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem?x=.pem", "query"),
    ("https://evil.example/sns.us-east-1.amazonaws.com/x.pem", "not an SNS host"),
    ("https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-x.pem", "not an SNS host"),
    ("https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem", "not an SNS host"),
    ("https://s3.amazonaws.com/SimpleNotificationService-x.pem", "not an SNS host"),
    ("", "missing"),
])
def test_spoofed_certificate_urls_are_refused(verifier, identity, url, reason):
    # Signed with the genuine key and the bad URL: only the URL check can refuse it.
    env = sign_envelope({"Type": "Notification", "MessageId": "m1", "TopicArn": TOPIC, "Message": "m",
                         "Timestamp": sns_timestamp()}, identity.key, "2", url)
    with pytest.raises(VerificationError, match=reason):
        verifier.verify(env)


def test_china_region_host_is_accepted_by_the_url_check():
    assert check_cert_url("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-a.pem") == \
        "SimpleNotificationService-a.pem"


def test_expired_timestamp_is_refused_and_age_check_is_configurable(tmp_path, identity):
    old = sns_timestamp(datetime.now(timezone.utc) - timedelta(hours=2))
    env = notification_envelope(identity, TOPIC, "m", timestamp=old)
    strict = SnsVerifier([TOPIC], CertStore(tmp_path / "certs"), max_age_seconds=3600)
    with pytest.raises(VerificationError, match="over the 3600 s limit"):
        strict.verify(env)
    SnsVerifier([TOPIC], CertStore(tmp_path / "certs"), max_age_seconds=0).verify(env)
    SnsVerifier([TOPIC], CertStore(tmp_path / "certs"), max_age_seconds=3 * 3600).verify(env)


def test_future_timestamp_is_refused(verifier, identity):
    env = notification_envelope(identity, TOPIC, "m",
                                timestamp=sns_timestamp(datetime.now(timezone.utc) + timedelta(hours=1)))
    with pytest.raises(VerificationError, match="future"):
        verifier.verify(env)


@pytest.mark.parametrize("version", ["3", "0", None, 2])
def test_unknown_signature_version_is_refused(verifier, identity, version):
    env = notification_envelope(identity, TOPIC, "m")
    env["SignatureVersion"] = version
    with pytest.raises(VerificationError, match="unsupported SignatureVersion"):
        verifier.verify(env)


def test_unknown_type_and_missing_signature_are_refused(verifier, identity):
    env = notification_envelope(identity, TOPIC, "m")
    with pytest.raises(VerificationError, match="unknown SNS Type"):
        verifier.verify(dict(env, Type="Surprise"))
    with pytest.raises(VerificationError, match="Signature missing"):
        verifier.verify({k: v for k, v in env.items() if k != "Signature"})


def test_certificate_from_another_key_is_refused(tmp_path, identity):
    other = write_identity(tmp_path / "other")
    # The other certificate installed under this identity's name: signature must not verify.
    (tmp_path / "swap").mkdir()
    (tmp_path / "swap" / identity.cert_name).write_bytes(other.cert_pem)
    env = notification_envelope(identity, TOPIC, "m")
    with pytest.raises(VerificationError, match="does not verify"):
        SnsVerifier([TOPIC], CertStore(tmp_path / "swap")).verify(env)


def test_fetched_certificate_is_fetched_once_and_must_be_current(identity):
    calls = []

    def fetch(url):
        calls.append(url)
        return identity.cert_pem

    store = CertStore(None, fetch=fetch)
    verifier = SnsVerifier([TOPIC], store)
    for _ in range(3):
        verifier.verify(notification_envelope(identity, TOPIC, "m"))
    assert calls == [identity.cert_url]

    expired = CertStore(None, fetch=lambda url: identity.cert_pem,
                        now=lambda: datetime.now(timezone.utc) + timedelta(days=4000))
    with pytest.raises(CertificateError, match="validity"):
        expired.public_key(identity.cert_url)

    def failing(url):
        raise OSError("network down")

    with pytest.raises(CertificateError, match="could not be fetched"):
        CertStore(None, fetch=failing).public_key(identity.cert_url)


def test_garbage_pem_in_the_store_is_refused(tmp_path):
    (tmp_path / "SimpleNotificationService-bad.pem").write_text("not a certificate")
    with pytest.raises(CertificateError, match="not a PEM"):
        CertStore(tmp_path).public_key("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-bad.pem")


def test_envelope_json_roundtrip_keeps_signature_valid(verifier, identity):
    env = json.loads(json.dumps(notification_envelope(identity, TOPIC, "ünïcode ✓", version="1")))
    verifier.verify(env)
