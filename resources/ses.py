"""SES sender: SESv2 SendEmail with raw MIME."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, EndpointConnectionError
from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import Field, PrivateAttr

from resources.aws import boto3_client
from resources.outgoing_email import OutgoingEmail, PermanentSendError, TransientSendError

TRANSIENT_CODES = {
    "Throttling", "ThrottlingException", "TooManyRequestsException", "ServiceUnavailable",
    "InternalFailure", "RequestTimeout", "LimitExceededException",
}


class SESSenderResource(ResourceWithBoto3Configuration):
    configuration_set: str = Field(default="", description="SES configuration set; empty for none.")
    max_rate: int = Field(default=0, description="Sends per second; 0 reads GetAccount SendQuota.")
    # boto3 retries on its own; the sending service does its own backoff, so keep boto3's short.
    max_attempts: int = 2
    _client: Any = PrivateAttr(default=None)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = boto3_client(self, "sesv2", max_pool_connections=64)
        return self._client

    def max_send_rate(self) -> float | None:
        """The configured rate, else the account's: SESv2 GetAccount, or SES GetSendQuota where
        GetAccount is unavailable (moto implements only the latter)."""
        if self.max_rate > 0:
            return self.max_rate
        try:
            rate = float(self.client.get_account().get("SendQuota", {}).get("MaxSendRate") or 0)
        except ClientError:
            rate = float(boto3_client(self, "ses").get_send_quota().get("MaxSendRate") or 0)
        return rate if rate > 0 else None

    def send(self, email: OutgoingEmail) -> str:
        kwargs: dict[str, Any] = {
            "FromEmailAddress": email.sender,
            "Destination": {"ToAddresses": [email.recipient]},
            "Content": {"Raw": {"Data": email.raw}},
            "EmailTags": [{"Name": k, "Value": v} for k, v in {"kind": email.kind, **email.tags}.items()],
        }
        if self.configuration_set:
            kwargs["ConfigurationSetName"] = self.configuration_set
        try:
            return self.client.send_email(**kwargs)["MessageId"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            msg = f"SES {code}: {exc.response.get('Error', {}).get('Message', '')}"
            if code in TRANSIENT_CODES or status >= 500 or status == 429:
                raise TransientSendError(msg) from None
            raise PermanentSendError(msg) from None
        except (BotoConnectionError, EndpointConnectionError) as exc:
            raise TransientSendError(f"SES connection: {exc}") from None
