"""SNS message verification: SignatureVersion 1 (SHA1withRSA) and 2 (SHA256withRSA).

Checks, cheapest first: Type, SignatureVersion, TopicArn allow-list, SigningCertURL,
message age, then the RSA signature over the canonical string (sns_canonical).
Every refusal raises VerificationError with a reason fit for the quarantine table.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from pipelines.common.sns.cert_store import CertificateError, CertStore
from pipelines.common.sns.canonical import SIGNED_KEYS, string_to_sign

HASHES = {"1": hashes.SHA1(), "2": hashes.SHA256()}
PKCS1 = padding.PKCS1v15()


class VerificationError(ValueError):
    pass


def parse_sns_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise VerificationError("Timestamp missing")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise VerificationError(f"Timestamp {value!r} is not ISO 8601") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts


class SnsVerifier:
    def __init__(self, topic_allowlist: Iterable[str], cert_store: CertStore,
                 max_age_seconds: float = 3600, now=None):
        self.topics = frozenset(t.strip() for t in topic_allowlist if t and t.strip())
        self.certs = cert_store
        self.max_age_seconds = max_age_seconds
        self._now = now or (lambda: datetime.now(timezone.utc))

    def topic_allowed(self, topic_arn: object) -> bool:
        return isinstance(topic_arn, str) and topic_arn in self.topics

    def verify(self, envelope: Mapping[str, object], received_at: datetime | None = None) -> datetime:
        """Raise VerificationError unless the envelope is genuine; return its Timestamp.
        The age limit counts to `received_at` (when the message reached us) or else to now."""
        msg_type = envelope.get("Type")
        if msg_type not in SIGNED_KEYS:
            raise VerificationError(f"unknown SNS Type {msg_type!r}")
        version = envelope.get("SignatureVersion")
        algorithm = HASHES.get(version)  # type: ignore[arg-type]
        if algorithm is None:
            raise VerificationError(f"unsupported SignatureVersion {version!r}")
        if not self.topic_allowed(envelope.get("TopicArn")):
            raise VerificationError(f"TopicArn {envelope.get('TopicArn')!r} is not on the allow-list")
        url = envelope.get("SigningCertURL")
        try:
            key = self.certs.public_key(url)  # type: ignore[arg-type]
        except CertificateError as exc:
            raise VerificationError(str(exc)) from None
        ts = parse_sns_time(envelope.get("Timestamp"))
        if self.max_age_seconds:
            age = ((received_at or self._now()) - ts).total_seconds()
            if age > self.max_age_seconds:
                raise VerificationError(f"message is {int(age)} s old, over the {int(self.max_age_seconds)} s limit")
            if age < -300:
                raise VerificationError("Timestamp is in the future")
        sig_text = envelope.get("Signature")
        if not isinstance(sig_text, str) or not sig_text:
            raise VerificationError("Signature missing")
        try:
            signature = base64.b64decode(sig_text, validate=True)
        except (binascii.Error, ValueError):
            raise VerificationError("Signature is not base64") from None
        try:
            data = string_to_sign(envelope)
        except KeyError as exc:
            raise VerificationError(str(exc.args[0])) from None
        try:
            key.verify(signature, data, PKCS1, algorithm)
        except InvalidSignature:
            raise VerificationError("signature does not verify") from None
        return ts
