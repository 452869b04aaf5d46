"""The ses-notifications consumer (pipelines/common/consumer.py).

`prepare` turns queue messages (verified and parsed by examine.py) into normalised events (one
Arrow table, event_batch), verified SNS control messages (subscription confirmations) and
refusals; it needs no database. `commit` applies a prepared batch inside the kit's transaction
(ingest.py). parallel.py runs the same consumer with verification in worker processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pyarrow as pa

from pipelines.common.consumer import Prepared, QueueConsumer
from pipelines.common.counters import Counters
from pipelines.common.queue_message import QueueMessage
from pipelines.common.redaction import RedactionRules
from pipelines.common.sns.verify import SnsVerifier
from pipelines.email_delivery import event_batch
from pipelines.email_delivery.examine import ControlMessage, Examined, Examiner
from pipelines.email_delivery.ingest import apply_events, insert_controls
from pipelines.email_delivery.phases import PhaseTimer

if TYPE_CHECKING:
    import duckdb

# An SNS envelope's signature fields are kept as they are in quarantine, so a replay verifies the
# message again: a signature is no credential (it is worth nothing for any other message).
SNS_REDACTION = RedactionRules(verbatim=frozenset({("Signature",), ("SignatureVersion",)}))

SOURCE = "ses-notifications"
DEDUPE_SKEW_SECONDS = 900  # clock skew allowed between SNS and us (the verifier allows 300 s), with room
Confirm = Callable[[str, str], str]  # (topic_arn, token) -> subscription ARN


@dataclass
class PreparedNotifications(Prepared):
    events: pa.Table = field(default_factory=lambda: event_batch.EMPTY)
    controls: list[ControlMessage] = field(default_factory=list)
    # A replay (messages carrying received_at) looks for duplicates in the whole ledger.
    replay: bool = False
    # verify_ms and assemble_ms of this batch's prepare (phases.py); commit adds them to its counters.
    phases: Counters = field(default_factory=Counters)


COUNTERS = ("events_new", "events_duplicate", "orphans", "status_changes", "unexpected_transitions",
            "address_changes", "controls")


class SesNotificationConsumer(QueueConsumer):
    redaction = SNS_REDACTION

    def __init__(self, verifier: SnsVerifier, *, accept_raw: bool = False, confirm: Confirm | None = None,
                 source: str = SOURCE):
        self.examiner = Examiner(verifier, accept_raw=accept_raw)
        self.confirm = confirm
        self.source = source
        # A copy of an SNS message passes verification only within max_age of its Timestamp, and the
        # first copy was stored after that Timestamp (less clock skew), so only events received since
        # then can be its duplicates. Raw delivery carries no Timestamp: the whole ledger is checked.
        self.dedupe_window = (None if accept_raw or not verifier.max_age_seconds
                              else timedelta(seconds=verifier.max_age_seconds + DEDUPE_SKEW_SECONDS))

    @property
    def verifier(self) -> SnsVerifier:
        return self.examiner.verifier

    @property
    def accept_raw(self) -> bool:
        return self.examiner.accept_raw

    # ---- parse + verify (no database, no network but the certificate fetch) ----
    def prepare(self, messages: Iterable[QueueMessage]) -> PreparedNotifications:
        messages = list(messages)
        phases = Counters()
        with PhaseTimer(phases)("verify"):
            examined, events = self.examine_all(messages)
        with PhaseTimer(phases)("assemble"):
            prepared = self.assemble(messages, examined, events)
        prepared.phases.update(phases)
        return prepared

    def examine_all(self, messages: Iterable[QueueMessage]) -> tuple[list[Examined], pa.Table]:
        """Verify and parse messages; their events as one table in message order."""
        examined, events = self.examiner.examine_all(messages)
        return examined, event_batch.to_table(events)

    def assemble(self, messages: list[QueueMessage], examined: list[Examined],
                 events: pa.Table) -> PreparedNotifications:
        """Merge per-message results in order; confirm allow-listed subscriptions (the one side effect).
        `events` are the batch's events: only messages that were not refused have any."""
        out = PreparedNotifications(events=events, replay=any(m.received_at is not None for m in messages))
        accept = out.accept
        for msg, ex in zip(messages, examined):
            reason = ex.reason
            controls = ex.controls
            if reason is None and not controls:  # the common case: a notification with events
                accept(msg.sqs_message_id)
                continue
            if reason is None and controls and controls[0].action == "confirm":
                controls, reason = self._confirm(controls[0])
            if reason is not None:
                out.refuse(self.source, msg.sqs_message_id, msg.body, reason)
                continue
            out.controls.extend(controls)
            out.accept(msg.sqs_message_id)
        return out

    def _confirm(self, pending: ControlMessage) -> tuple[list[ControlMessage], str | None]:
        if self.confirm is None:
            return [], "SubscriptionConfirmation for an allow-listed topic, but no SNS client is configured to confirm it"
        try:
            arn = self.confirm(pending.topic_arn, pending.token or "")
        except Exception as exc:  # replayable from quarantine; the token stays valid for 3 days
            return [], f"SubscriptionConfirmation could not be confirmed: {type(exc).__name__}"
        return [replace(pending, action="confirmed", subscription_arn=arn, token=None)], None

    # ---- apply + write (inside the kit's transaction) ----
    def commit(self, conn: duckdb.DuckDBPyConnection, prepared: PreparedNotifications) -> Counters:
        began = time.perf_counter()
        result = Counters(dict.fromkeys(COUNTERS, 0))
        timer = PhaseTimer(result)
        since = (None if prepared.replay or self.dedupe_window is None
                 else datetime.now(timezone.utc) - self.dedupe_window)
        apply_events(conn, prepared.events, result, dedupe_since=since, timer=timer)
        if prepared.controls:
            with timer("write"):
                insert_controls(conn, prepared.controls)
            result["controls"] = len(prepared.controls)
        result["apply_ms"] += (time.perf_counter() - began) * 1000 - result["write_ms"]
        result.update(prepared.phases)
        return result
