"""The benchmark's SQS endpoint (bench/sqs_endpoint.py) behaves like moto's for what the drain
uses: receive, delete, visibility and receive counts, through a real boto3 client."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import boto3
import pytest

from bench.sqs_endpoint import Running


def sqs_client(endpoint: str):
    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def receive(sqs, url: str, n: int = 10, **kwargs) -> list[dict]:
    return sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=n, WaitTimeSeconds=0,
                               MessageSystemAttributeNames=["ApproximateReceiveCount"],
                               MessageAttributeNames=["All"], **kwargs).get("Messages", [])


def counts(messages: list[dict]) -> dict[int, int]:
    return dict(Counter(int(m["Attributes"]["ApproximateReceiveCount"]) for m in messages))


def delete(sqs, url: str, handles: list[str]) -> tuple[int, list[str]]:
    resp = sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": h}
                                                            for i, h in enumerate(handles)])
    return len(resp.get("Successful", [])), sorted(f.get("Code", "") for f in resp.get("Failed", []))


def depth(sqs, url: str) -> tuple[int, int]:
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                               "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def scenario(endpoint: str) -> list:
    """What one client observes; the same calls against both endpoints must observe the same."""
    sqs = sqs_client(endpoint)
    name = f"compare-{uuid.uuid4().hex[:8]}"
    sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "2"})
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    seen: list = []
    sent = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "MessageBody": f"body {i}",
         "MessageAttributes": {"Stripe-Signature": {"DataType": "String", "StringValue": f"t={i}"}}}
        for i in range(10)])
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"body {i + 10}"} for i in range(5)])
    seen.append(("sent", len(sent["Successful"]), depth(sqs, url)))

    first, second, third = receive(sqs, url), receive(sqs, url), receive(sqs, url)
    got = first + second
    seen.append(("received", len(first), len(second), len(third), counts(got), depth(sqs, url)))
    seen.append(("bodies", sorted(m["Body"] for m in got) == sorted(f"body {i}" for i in range(15))))
    seen.append(("attributes", sorted(m["MessageAttributes"]["Stripe-Signature"]["StringValue"]
                                      for m in got if "MessageAttributes" in m)))
    by_body = {m["Body"]: m for m in got}

    # delete three with their current handles
    seen.append(("delete", delete(sqs, url, [by_body[f"body {i}"]["ReceiptHandle"] for i in range(3)]),
                 depth(sqs, url)))
    # two made visible at once: received again, their count goes up
    resp = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "ReceiptHandle": by_body[f"body {i}"]["ReceiptHandle"], "VisibilityTimeout": 0}
        for i in (3, 4)])
    again = receive(sqs, url)
    seen.append(("made visible", len(resp["Successful"]), sorted(m["Body"] for m in again), counts(again)))
    # one kept hidden past the queue's timeout
    keep = by_body["body 5"]["ReceiptHandle"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=keep, VisibilityTimeout=6)
    time.sleep(2.5)
    back = receive(sqs, url) + receive(sqs, url)
    seen.append(("after the timeout", len(back), counts(back), "body 5" in {m["Body"] for m in back},
                 depth(sqs, url)))
    # a receive may set its own visibility timeout
    for m in back:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    short = receive(sqs, url, VisibilityTimeout=1)
    time.sleep(1.5)
    seen.append(("own timeout", len(short), len(receive(sqs, url))))
    # the one kept hidden has not come back; it is deleted with its (unchanged) handle
    seen.append(("kept hidden", delete(sqs, url, [keep]), depth(sqs, url)))
    return seen


@pytest.mark.integration
def test_the_bench_endpoint_observes_what_moto_observes(local_stack):
    with Running() as bench:
        ours = scenario(bench.url)
    theirs = scenario(local_stack.endpoint)
    assert ours == theirs
    # and the scenario is not vacuous
    assert theirs[1][1:5] == (10, 5, 0, {1: 15})


def test_latency_is_added_to_every_call_and_calls_are_counted():
    with Running(latency_ms=50) as bench:
        sqs = sqs_client(bench.url)
        url = sqs.create_queue(QueueName="lat")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="x")
        started = time.perf_counter()
        got = receive(sqs, url)
        took = time.perf_counter() - started
        stats = bench.endpoint.Stats({})
    assert len(got) == 1 and 0.05 <= took < 0.5
    assert stats["calls"]["ReceiveMessage"] == 1 and stats["calls"]["SendMessage"] == 1


def test_a_long_poll_returns_when_a_message_arrives():
    with Running() as bench:
        sqs = sqs_client(bench.url)
        url = sqs.create_queue(QueueName="poll")["QueueUrl"]
        started = time.perf_counter()
        assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", []) == []
        assert time.perf_counter() - started >= 0.95
