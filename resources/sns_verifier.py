"""SNS verification settings for SES notifications, and the verifier built from them.

The verifier (and the certificate keys it caches) lives for the process, so each signing
certificate is loaded once per process, not once per run or batch.
"""

from __future__ import annotations

import threading

import dagster as dg
from pydantic import Field

from pipelines.email.ses.cert_store import CertStore
from pipelines.email.ses.sns_verify import SnsVerifier

_STORES: dict[str, CertStore] = {}
_LOCK = threading.Lock()


def _truthy(value: str) -> bool:
    value = value.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"SES_ACCEPT_RAW must be true or false, got {value!r}")


class SnsVerifierResource(dg.ConfigurableResource):
    topic_allowlist: str = Field(description="Comma-separated SNS topic ARNs whose messages are accepted.")
    cert_dir: str = Field(default="", description="Local certificate store; empty fetches SigningCertURL over https.")
    max_age_seconds: int = Field(default=3600, description="Oldest SNS Timestamp accepted; 0 switches the check off.")
    accept_raw: str = Field(default="false", description="Accept raw SES JSON (SNS raw delivery on): true/false.")

    @property
    def topics(self) -> list[str]:
        return [t.strip() for t in self.topic_allowlist.split(",") if t.strip()]

    @property
    def raw_accepted(self) -> bool:
        return _truthy(self.accept_raw)

    def verifier(self) -> SnsVerifier:
        with _LOCK:
            store = _STORES.get(self.cert_dir)
            if store is None:
                store = _STORES[self.cert_dir] = CertStore(self.cert_dir or None)
        return SnsVerifier(self.topics, store, max_age_seconds=self.max_age_seconds)
