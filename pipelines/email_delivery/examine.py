"""Verify and parse one queue message: SNS envelope -> signature -> SES payload -> events.

Pure (no database; no network but the certificate fetch) and light: it imports neither pyarrow
nor DuckDB, because the verify workers (verify_worker.py) run it and each worker's memory
counts against the consumer's. `ingest.py` turns the events into the batch's Arrow table.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone

import orjson

from pipelines.common.queue_message import QueueMessage
from pipelines.common.sns.canonical import SIGNED_KEYS
from pipelines.email_delivery.ses_parse import ParseError, SesEvent, check_id, is_ses_payload, parse_ses
from pipelines.common.sns.verify import SnsVerifier, VerificationError

# SesEvent's fields in order: the columns of the batch's event table (event_batch.SCHEMA).
EVENT_FIELDS = tuple(f.name for f in fields(SesEvent))
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_BODY_BYTES = 256 * 1024   # the largest message SQS carries
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class ControlMessage:
    sns_message_id: str
    sns_type: str
    topic_arn: str
    action: str                     # confirm (pending), confirmed, recorded
    subscription_arn: str | None
    received_at: datetime
    token: str | None = field(default=None, repr=False)  # only while pending; never stored


@dataclass
class Examined:
    """One queue message verified and parsed: how many events it gave (they are rows of the
    batch's event table, in message order) and its control messages, or the reason it is refused."""
    sqs_message_id: str
    n_events: int
    controls: list[ControlMessage]
    reason: str | None


def event_columns(events: list[SesEvent]) -> list[list]:
    """Events as one list per EVENT_FIELDS entry, occurred_at as microseconds since the epoch
    (lists of str and int pickle faster than datetimes, and need no pyarrow to build)."""
    if not events:
        return [[] for _ in EVENT_FIELDS]
    columns = [list(c) for c in zip(*map(operator.attrgetter(*EVENT_FIELDS), events))]
    at = EVENT_FIELDS.index("occurred_at")
    columns[at] = [(t - _EPOCH) // _MICROSECOND for t in columns[at]]
    return columns


class Examiner:
    def __init__(self, verifier: SnsVerifier, *, accept_raw: bool = False):
        self.verifier = verifier
        self.accept_raw = accept_raw

    def examine_all(self, messages: Iterable[QueueMessage]) -> tuple[list[Examined], list[SesEvent]]:
        """Verify and parse messages; their events in message order."""
        examined: list[Examined] = []
        events: list[SesEvent] = []
        for msg in messages:
            try:
                evs, controls = self.examine(msg)
            except (VerificationError, ParseError) as exc:
                examined.append(Examined(msg.sqs_message_id, 0, [], str(exc)))
                continue
            examined.append(Examined(msg.sqs_message_id, len(evs), controls, None))
            events.extend(evs)
        return examined, events

    def examine(self, msg: QueueMessage) -> tuple[list[SesEvent], list[ControlMessage]]:
        """Events and control messages of one message; refuses (VerificationError, ParseError)
        anything else, and raises nothing else."""
        if len(msg.body) > MAX_BODY_BYTES // 4 and len(msg.body.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
            raise ParseError(f"body is over the {MAX_BODY_BYTES}-byte SQS limit")
        try:
            # orjson refuses nesting over 1024 levels and lone surrogates (DuckDB cannot store them)
            body = orjson.loads(msg.body)
        except orjson.JSONDecodeError:
            raise ParseError("body is not JSON") from None
        if not isinstance(body, dict):
            raise ParseError("body is not a JSON object")
        if "Type" in body:
            return self._envelope(body, msg.received_at)
        if is_ses_payload(body):
            if not self.accept_raw:
                raise ParseError("raw SES payload (SNS raw delivery) refused: SES_ACCEPT_RAW is off")
            # Raw delivery carries no SNS id or signature: the body's hash is the idempotency key.
            digest = hashlib.sha256(msg.body.encode("utf-8")).hexdigest()[:32]
            return parse_ses(body, f"raw-{digest}", datetime.now(timezone.utc)), []
        raise ParseError("neither an SNS envelope nor an SES payload")

    def _envelope(self, env: dict, received_at: datetime | None) -> tuple[list[SesEvent], list[ControlMessage]]:
        sns_type = env.get("Type")
        try:
            sns_time = self.verifier.verify(env, received_at)
        except VerificationError as exc:
            label = sns_type if isinstance(sns_type, str) and sns_type in SIGNED_KEYS else "message"
            raise VerificationError(f"SNS {label} refused: {exc}") from None
        if env.get("MessageId") in (None, ""):
            raise ParseError("SNS envelope lacks MessageId")
        sns_id = check_id(env["MessageId"], "SNS MessageId")
        if sns_type == "Notification":
            return parse_ses(env.get("Message"), sns_id, sns_time), []  # type: ignore[arg-type]
        topic = env["TopicArn"]
        if sns_type == "SubscriptionConfirmation":
            return [], [ControlMessage(sns_id, sns_type, topic, "confirm", None, sns_time, token=env["Token"])]
        # UnsubscribeConfirmation: nothing to do but record it
        return [], [ControlMessage(sns_id, sns_type, topic, "recorded", None, sns_time)]
