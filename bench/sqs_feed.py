"""Feeding a benchmark's consumer through the local SQS (moto).

moto's SQS costs O(messages in the queue) per message sent, received or deleted, so the feeder
keeps a small backlog (as a live SNS subscription or EventBridge rule would) instead of
preloading the queue. The consumer runs in a child process with the environment `moto_queue`
returns.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager


def moto_queue(endpoint: str, prefix: str):
    """(sqs client, queue name, queue url, child environment) for a fresh queue on the moto server."""
    import boto3

    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
    return sqs, name, url, env


def _backlog(sqs, url: str) -> int:
    return int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
               ["Attributes"]["ApproximateNumberOfMessages"])


@contextmanager
def feeding(sqs, url: str, bodies: Iterable[str], *, backlog_max: int = 100,
            on_sent: Callable[[int], None] | None = None) -> Iterator[None]:
    """Send `bodies` in batches of 10 from a thread while the block runs, never more than
    `backlog_max` waiting; the feeder stops when the block ends (the consumer is done)."""
    done = threading.Event()

    def produce() -> None:
        batch: list[str] = []
        sent = 0
        for body in bodies:
            batch.append(body)
            if len(batch) < 10:
                continue
            sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(j), "MessageBody": b}
                                                          for j, b in enumerate(batch)])
            sent += len(batch)
            batch = []
            if on_sent is not None:
                on_sent(sent)
            if sent % 100 == 0:
                while _backlog(sqs, url) > backlog_max:
                    if done.is_set():   # the consumer stopped (its time limit): stop feeding it
                        return
                    time.sleep(0.02)
        if batch:
            sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(j), "MessageBody": b}
                                                          for j, b in enumerate(batch)])
            if on_sent is not None:
                on_sent(sent + len(batch))

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    time.sleep(1.0)   # a first backlog, so the consumer's long polls start full
    try:
        yield
    finally:
        done.set()
        producer.join()
