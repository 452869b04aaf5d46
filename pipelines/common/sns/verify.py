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


def shown(value: object, limit: int = 80) -> str:
    """A value for a refusal reason: repr, cut short (a hostile body can put anything there)."""
    if isinstance(value, (dict, list)):
        return f"<{type(value).__name__} of {len(value)}>"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def parse_sns_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise VerificationError("Timestamp missing" if value is None else "Timestamp is not a string")
    try:
        ts = datetime.fromisoformat(value)
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        ts = ts.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise VerificationError(f"Timestamp {shown(value)} is not ISO 8601") from None
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
        if not isinstance(msg_type, str) or msg_type not in SIGNED_KEYS:
            raise VerificationError(f"unknown SNS Type {shown(msg_type)}")
        version = envelope.get("SignatureVersion")
        algorithm = HASHES.get(version) if isinstance(version, str) else None
        if algorithm is None:
            raise VerificationError(f"unsupported SignatureVersion {shown(version)}")
        if not self.topic_allowed(envelope.get("TopicArn")):
            raise VerificationError(f"TopicArn {shown(envelope.get('TopicArn'), 200)} is not on the allow-list")
        for key_name in SIGNED_KEYS[msg_type]:
            value = envelope.get(key_name)
            if value is not None and not isinstance(value, str):
                raise VerificationError(f"SNS {msg_type} field {key_name!r} is not a string")
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
        except UnicodeEncodeError:
            raise VerificationError("a signed field holds a lone surrogate") from None
        try:
            key.verify(signature, data, PKCS1, algorithm)
        except InvalidSignature:
            raise VerificationError("signature does not verify") from None
        return ts
