"""AWS resources: SQS queue, SNS client. Built on dagster-aws' boto3 configuration.

boto3 itself honours AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE> when
`endpoint_url` is left empty, so one environment variable moves everything between
the local stack and AWS.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import boto3
from botocore.config import Config
from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import PrivateAttr

SQS_BATCH = 10  # SQS's hard limit for ReceiveMessage and DeleteMessageBatch
# HTTP connections a queue's client keeps: the drain's receive, delete and visibility calls in flight.
SQS_CONNECTIONS = 64
_lazy = threading.Lock()   # the client and URL are made once, whichever thread asks first


def boto3_client(cfg: ResourceWithBoto3Configuration, service: str, max_pool_connections: int = 10) -> Any:
    session = boto3.session.Session(profile_name=cfg.profile_name, region_name=cfg.region_name)
    return session.client(
        service,
        endpoint_url=cfg.endpoint_url or None,
        use_ssl=cfg.use_ssl,
        verify=cfg.verify,
        aws_access_key_id=cfg.aws_access_key_id,
        aws_secret_access_key=cfg.aws_secret_access_key,
        aws_session_token=cfg.aws_session_token,
        config=Config(
            retries={"max_attempts": cfg.max_attempts, "mode": "standard"},
            max_pool_connections=max_pool_connections,
        ),
    )


class SQSQueueResource(ResourceWithBoto3Configuration):
    """One SQS queue, by name. Receives and deletes in batches of 10. Its calls may run from
    several threads at once (a boto3 client is thread-safe; the drain overlaps them)."""

    supports_concurrent_calls: ClassVar[bool] = True
    queue_name: str
    _client: Any = PrivateAttr(default=None)
    _url: str | None = PrivateAttr(default=None)

    @property
    def client(self) -> Any:
        if self._client is None:
            with _lazy:
                if self._client is None:
                    self._client = boto3_client(self, "sqs", max_pool_connections=SQS_CONNECTIONS)
        return self._client

    @property
    def url(self) -> str:
        if self._url is None:
            client = self.client
            with _lazy:
                if self._url is None:
                    self._url = client.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
        return self._url

    def depth(self) -> int:
        """Visible messages (approximate), the sensor's only question."""
        attrs = self.client.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attrs.get("ApproximateNumberOfMessages", 0))

    def visibility_timeout(self) -> int:
        """Seconds a received message stays hidden (the queue's VisibilityTimeout); read once per
        run, so a drain can flush a batch before its messages reappear."""
        attrs = self.client.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["VisibilityTimeout"])["Attributes"]
        return int(attrs.get("VisibilityTimeout", 30))

    def receive(self, max_messages: int = SQS_BATCH, wait_seconds: int = 1,
                visibility_timeout: int | None = None) -> list[dict]:
        kwargs: dict[str, Any] = {
            "QueueUrl": self.url,
            "MaxNumberOfMessages": min(max_messages, SQS_BATCH),
            "WaitTimeSeconds": wait_seconds,
            "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
            "MessageAttributeNames": ["All"],
        }
        if visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = visibility_timeout
        return self.client.receive_message(**kwargs).get("Messages", [])

    def delete(self, receipt_handles: Sequence[str]) -> list[str]:
        """Delete in batches of 10; returns the handles SQS refused to delete."""
        failed: list[str] = []
        for start in range(0, len(receipt_handles), SQS_BATCH):
            chunk = receipt_handles[start:start + SQS_BATCH]
            entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)]
            resp = self.client.delete_message_batch(QueueUrl=self.url, Entries=entries)
            failed.extend(chunk[int(f["Id"])] for f in resp.get("Failed", []))
        return failed

    def change_visibility(self, receipt_handles: Sequence[str], seconds: int) -> list[str]:
        """Keep messages hidden `seconds` more from now, in batches of 10; returns the handles SQS
        refused (deleted meanwhile, or their visibility already ran out)."""
        failed: list[str] = []
        for start in range(0, len(receipt_handles), SQS_BATCH):
            chunk = receipt_handles[start:start + SQS_BATCH]
            entries = [{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": seconds} for i, h in enumerate(chunk)]
            resp = self.client.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)
            failed.extend(chunk[int(f["Id"])] for f in resp.get("Failed", []))
        return failed

    def send(self, bodies: Iterable[str]) -> int:
        """Send in batches of 10; returns how many were sent."""
        batch: list[str] = []
        sent = 0
        for body in bodies:
            batch.append(body)
            if len(batch) == SQS_BATCH:
                sent += self._send_batch(batch)
                batch = []
        if batch:
            sent += self._send_batch(batch)
        return sent

    def _send_batch(self, bodies: list[str]) -> int:
        resp = self.client.send_message_batch(
            QueueUrl=self.url,
            Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)],
        )
        if resp.get("Failed"):
            raise RuntimeError(f"SQS refused {len(resp['Failed'])} messages on {self.queue_name}: "
                               f"{resp['Failed'][0].get('Message')}")
        return len(resp.get("Successful", []))


class SNSResource(ResourceWithBoto3Configuration):
    """SNS client: confirming subscriptions, optional publishing."""

    _client: Any = PrivateAttr(default=None)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = boto3_client(self, "sns")
        return self._client

    def confirm_subscription(self, topic_arn: str, token: str) -> str:
        return self.client.confirm_subscription(TopicArn=topic_arn, Token=token)["SubscriptionArn"]
