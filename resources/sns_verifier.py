"""SNS verification settings for SES notifications (configuration only).

pipelines/common/sns builds the verifier from these values; this resource knows nothing of it.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field


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
