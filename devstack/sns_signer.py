"""Signing SNS envelopes the way AWS does, with a locally generated key and certificate.

AWS signs the canonical string of pipelines.common.sns.canonical with RSA PKCS#1 v1.5:
SHA1 for SignatureVersion "1", SHA256 for "2". The certificate is published at
SigningCertURL; locally the same PEM sits in the cert directory under the URL's basename
(SNS_CERT_DIR), which is where the SES verifier looks it up.

Tests import this module to build envelopes of all three types (Notification,
SubscriptionConfirmation, UnsubscribeConfirmation) in either signature version.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from pipelines.common.sns.canonical import string_to_sign

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
KEY_FILE = "signing-key.pem"
CERT_PREFIX = "SimpleNotificationService-"
HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}


@dataclass(frozen=True)
class SigningIdentity:
    key: rsa.RSAPrivateKey
    cert_pem: bytes
    cert_url: str

    @property
    def cert_name(self) -> str:
        return self.cert_url.rsplit("/", 1)[1]

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def cert_url_for(name: str, region: str = REGION) -> str:
    return f"https://sns.{region}.amazonaws.com/{name}"


def generate_signing_identity(region: str = REGION) -> SigningIdentity:
    """A fresh RSA-2048 key and a self-signed certificate shaped like SNS's (CN=sns.amazonaws.com)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailroom devstack (local, not AWS)"),
    ])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("sns.amazonaws.com")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    return SigningIdentity(key, cert_pem, cert_url_for(f"{CERT_PREFIX}{uuid.uuid4().hex}.pem", region))


def load_or_create_signing_identity(cert_dir: Path | str, region: str = REGION) -> SigningIdentity:
    """The identity kept in cert_dir, generated on first use and reused afterwards."""
    cert_dir = Path(cert_dir)
    cert_dir.mkdir(parents=True, exist_ok=True)
    key_path = cert_dir / KEY_FILE
    certs = sorted(cert_dir.glob(f"{CERT_PREFIX}*.pem"))
    if key_path.exists() and len(certs) == 1:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return SigningIdentity(key, certs[0].read_bytes(), cert_url_for(certs[0].name, region))
    for stale in certs:
        stale.unlink()
    identity = generate_signing_identity(region)
    (cert_dir / identity.cert_name).write_bytes(identity.cert_pem)
    tmp = key_path.with_suffix(".tmp")
    tmp.write_bytes(identity.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    tmp.chmod(0o600)
    tmp.replace(key_path)
    return identity


def sign_envelope(envelope: dict, key: rsa.RSAPrivateKey, version: str = "2",
                  cert_url: str | None = None) -> dict:
    """A copy of envelope with SignatureVersion, Signature (and SigningCertURL if given) set."""
    version = str(version)
    if version not in HASHES:
        raise ValueError(f"SignatureVersion must be '1' or '2', got {version!r}")
    signed = dict(envelope)
    signed["SignatureVersion"] = version
    if cert_url is not None:
        signed["SigningCertURL"] = cert_url
    signature = key.sign(string_to_sign(signed), padding.PKCS1v15(), HASHES[version]())
    signed["Signature"] = base64.b64encode(signature).decode("ascii")
    return signed


def verify_envelope(envelope: dict, cert_pem: bytes) -> None:
    """Raises cryptography's InvalidSignature unless envelope's signature matches cert_pem."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.public_key().verify(  # type: ignore[union-attr, call-arg]
        base64.b64decode(envelope["Signature"]), string_to_sign(envelope),
        padding.PKCS1v15(), HASHES[str(envelope["SignatureVersion"])](),  # type: ignore[arg-type]
    )


def sns_timestamp(when: dt.datetime | None = None) -> str:
    """ISO-8601 with milliseconds and Z, as SNS writes it."""
    when = (when or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _region_of(topic_arn: str) -> str:
    parts = topic_arn.split(":")
    return parts[3] if len(parts) > 5 else REGION


def notification_envelope(identity: SigningIdentity, topic_arn: str, message: str, *,
                          version: str = "2", subject: str | None = None,
                          message_id: str | None = None, timestamp: str | None = None) -> dict:
    """A signed Notification (Subject omitted unless given, as SES notifications arrive)."""
    region = _region_of(topic_arn)
    env: dict = {"Type": "Notification", "MessageId": message_id or str(uuid.uuid4()), "TopicArn": topic_arn}
    if subject is not None:
        env["Subject"] = subject
    env["Message"] = message
    env["Timestamp"] = timestamp or sns_timestamp()
    env["UnsubscribeURL"] = (f"https://sns.{region}.amazonaws.com/?Action=Unsubscribe"
                             f"&SubscriptionArn={topic_arn}:{uuid.uuid4()}")
    return sign_envelope(env, identity.key, version, identity.cert_url)


def confirmation_envelope(identity: SigningIdentity, topic_arn: str, *, unsubscribe: bool = False,
                          version: str = "2", token: str | None = None,
                          message_id: str | None = None, timestamp: str | None = None) -> dict:
    """A signed SubscriptionConfirmation (or UnsubscribeConfirmation)."""
    region = _region_of(topic_arn)
    token = token or uuid.uuid4().hex * 4
    kind = "UnsubscribeConfirmation" if unsubscribe else "SubscriptionConfirmation"
    text = (f"You have chosen to deactivate subscription arn {topic_arn}." if unsubscribe else
            f"You have chosen to subscribe to the topic {topic_arn}.\n"
            "To confirm the subscription, visit the SubscribeURL included in this message.")
    env = {
        "Type": kind,
        "MessageId": message_id or str(uuid.uuid4()),
        "Token": token,
        "TopicArn": topic_arn,
        "Message": text,
        "SubscribeURL": (f"https://sns.{region}.amazonaws.com/?Action=ConfirmSubscription"
                         f"&TopicArn={topic_arn}&Token={token}"),
        "Timestamp": timestamp or sns_timestamp(),
    }
    return sign_envelope(env, identity.key, version, identity.cert_url)
