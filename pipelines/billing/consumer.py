"""The stripe-events consumer (pipelines/common/consumer.py): the ingest's prepare and commit
(ingest.py), and dunning as its after-commit hook. The Dagster wiring builds it from the
resources (jobs.py); the benchmark and the tests build it directly."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.billing.envelope import KEPT_REDACTION
from pipelines.billing.ingest import SOURCE, IngestSettings, PreparedEvents, StripeIngest
from pipelines.billing.notices import NoticeQueue, send_event_notices
from pipelines.billing.retrieve import Retriever
from pipelines.billing.vocab import EventOutcome
from pipelines.common.consumer import QueueConsumer
from pipelines.common.counters import Counters
from pipelines.common.queue_message import QueueMessage

if TYPE_CHECKING:
    import duckdb

    from pipelines.store.store import Store

# Outcomes after which an event says nothing about our customers (another tenant's, or unreadable).
NOT_OURS = frozenset({EventOutcome.IGNORED_TENANT, EventOutcome.QUARANTINED, EventOutcome.UNKNOWN_TYPE})


class StripeEventConsumer(QueueConsumer):
    source = SOURCE
    redaction = KEPT_REDACTION

    def __init__(self, settings: IngestSettings, retriever: Retriever | None = None,
                 notices: NoticeQueue | None = None):
        """`notices`: where dunning sends its email requests (email-requests); None sends none."""
        self.ingest = StripeIngest(settings, retriever, source=self.source)
        self.notices = notices

    def prepare(self, messages: list[QueueMessage]) -> PreparedEvents:
        return self.ingest.prepare(messages)

    def commit(self, conn: duckdb.DuckDBPyConnection, prepared: PreparedEvents) -> Counters:
        return self.ingest.commit(conn, prepared)

    def after_commit(self, store: Store, prepared: PreparedEvents) -> Counters:
        """Dunning: dispatch the notices the batch's events call for (notices.py), before the delete.

        Every event of the batch is passed, duplicates included: `billing_notices` remembers what was
        dispatched, so when a run dies between the commit and the dispatch, the redelivered batch
        (duplicates for the ledger) still sends what is owed, once."""
        if self.notices is None:
            return Counters()
        events = [inc.event for inc in prepared.events if inc.outcome not in NOT_OURS]
        report = send_event_notices(store.transaction, events, self.notices)
        return Counters({k: v for k, v in report.as_metadata().items() if v})

    def run_metadata(self) -> dict[str, object]:
        """Stripe API calls the run made (re-retrieves), for the run's metadata."""
        calls = getattr(self.ingest.retriever, "calls", None)
        return {"stripe_api_calls": sum(calls.values()) if calls else 0}
