"""The AWS topology the code location expects, created idempotently.

Every queue the code location drains (pipelines/queues.py: email-requests, ses-notifications,
stripe-events), each with a <name>-dlq through a RedrivePolicy (maxReceiveCount 5); SNS topic ses-notifications subscribed to its queue with
raw delivery off; SES identities (domain mailroom.test, address noreply@mailroom.test)
whose Bounce/Complaint/Delivery notifications go to the topic; SESv2 configuration set
`mailroom`; S3 bucket `mailroom-assets`, where the PostgreSQL profile publishes the report tables
(ASSET_STORE_URL, docs/asset-store.md). Works against moto or a real account (boto3 clients passed in).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

NOTIFICATIONS_QUEUE = "ses-notifications"
TOPIC_NAME = "ses-notifications"
SES_DOMAIN = "mailroom.test"
SES_SENDER = "noreply@mailroom.test"
CONFIGURATION_SET = "mailroom"
MAX_RECEIVE_COUNT = 5
ASSET_BUCKET = "mailroom-assets"
ASSET_PREFIX = "reports"
NOTIFICATION_TYPES = ("Bounce", "Complaint", "Delivery")


@dataclass(frozen=True)
class Topology:
    queue_urls: dict[str, str]  # every queue, DLQs included, by name
    topic_arn: str
    subscription_arn: str
    asset_bucket: str = ASSET_BUCKET


def queue_names() -> tuple[str, ...]:
    """The drained queues, from their specs (imported here: they load Dagster and every domain,
    which the devstack's own processes do not need)."""
    from pipelines.queues import QUEUE_SPECS

    return tuple(spec.source for spec in QUEUE_SPECS)


def __getattr__(name: str) -> Any:
    if name == "QUEUES":
        return queue_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def dlq_name(queue: str) -> str:
    return f"{queue}-dlq"


def _queue_url(sqs: Any, name: str) -> str:
    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        return sqs.create_queue(QueueName=name)["QueueUrl"]


def _queue_arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def ensure_topology(client: Callable[[str], Any]) -> Topology:
    """Creates whatever is missing and sets attributes to the wanted values; safe to repeat.

    client(service) returns a boto3 client for "sqs", "sns", "ses", "sesv2", "s3".
    """
    sqs, sns, ses, sesv2 = client("sqs"), client("sns"), client("ses"), client("sesv2")
    ensure_bucket(client("s3"), ASSET_BUCKET)
    urls: dict[str, str] = {}
    for name in queue_names():
        dlq_url = urls[dlq_name(name)] = _queue_url(sqs, dlq_name(name))
        url = urls[name] = _queue_url(sqs, name)
        redrive = json.dumps({"deadLetterTargetArn": _queue_arn(sqs, dlq_url),
                              "maxReceiveCount": str(MAX_RECEIVE_COUNT)})
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": redrive})

    topic_arn = sns.create_topic(Name=TOPIC_NAME)["TopicArn"]
    queue_url = urls[NOTIFICATIONS_QUEUE]
    queue_arn = _queue_arn(sqs, queue_url)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "sns-to-sqs", "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage", "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
        }],
    }
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
    subscription_arn = next(
        (s["SubscriptionArn"] for s in _subscriptions(sns, topic_arn)
         if s["Protocol"] == "sqs" and s["Endpoint"] == queue_arn),
        None,
    )
    if subscription_arn is None:
        subscription_arn = sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn,
                                         ReturnSubscriptionArn=True)["SubscriptionArn"]
    # Raw delivery off: the SQS body is the signed SNS envelope.
    sns.set_subscription_attributes(SubscriptionArn=subscription_arn,
                                    AttributeName="RawMessageDelivery", AttributeValue="false")

    ses.verify_domain_identity(Domain=SES_DOMAIN)
    ses.verify_email_identity(EmailAddress=SES_SENDER)
    # On the address identity only: moto 5.2.5 looks notification topics up by the *domain*
    # of the sender and, when set there, publishes its own placeholder feedback (unparseable
    # notificationType, fixed messageId) for any recipient containing "bounce"/"complaint"/
    # "success", which would land on the queue beside the mailbox simulator's real ones.
    # On real SES the address identity's settings take precedence over the domain's anyway.
    for kind in NOTIFICATION_TYPES:
        ses.set_identity_notification_topic(Identity=SES_SENDER, NotificationType=kind, SnsTopic=topic_arn)

    existing = {c for c in sesv2.list_configuration_sets().get("ConfigurationSets", [])}
    if CONFIGURATION_SET not in existing:
        sesv2.create_configuration_set(ConfigurationSetName=CONFIGURATION_SET)
    return Topology(queue_urls=urls, topic_arn=topic_arn, subscription_arn=subscription_arn)


def ensure_bucket(s3: Any, name: str) -> None:
    try:
        s3.head_bucket(Bucket=name)
    except s3.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
        s3.create_bucket(Bucket=name)


def _subscriptions(sns: Any, topic_arn: str) -> list[dict]:
    subs: list[dict] = []
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
        subs.extend(page.get("Subscriptions", []))
    return subs


def describe_topology(client: Callable[[str], Any]) -> dict:
    """A comparable snapshot: queues with their attributes, subscriptions, identities, config sets."""
    sqs, sns, ses, sesv2 = client("sqs"), client("sns"), client("ses"), client("sesv2")
    volatile = {"CreatedTimestamp", "LastModifiedTimestamp", "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"}
    queues = {}
    for url in sorted(sqs.list_queues().get("QueueUrls", [])):
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        queues[url.rsplit("/", 1)[1]] = {k: v for k, v in sorted(attrs.items()) if k not in volatile}
    topics = sorted(t["TopicArn"] for t in sns.list_topics().get("Topics", []))
    subscriptions = []
    for topic in topics:
        for s in _subscriptions(sns, topic):
            attrs = sns.get_subscription_attributes(SubscriptionArn=s["SubscriptionArn"])["Attributes"]
            subscriptions.append({"TopicArn": topic, "Protocol": s["Protocol"], "Endpoint": s["Endpoint"],
                                  "SubscriptionArn": s["SubscriptionArn"],
                                  "RawMessageDelivery": attrs.get("RawMessageDelivery", "false")})
    identities = sorted(ses.list_identities().get("Identities", []))
    config_sets = sorted(sesv2.list_configuration_sets().get("ConfigurationSets", []))
    buckets = sorted(b["Name"] for b in client("s3").list_buckets().get("Buckets", []))
    return {"queues": queues, "topics": topics, "subscriptions": subscriptions,
            "identities": identities, "configuration_sets": config_sets, "buckets": buckets}
