"""The stripe-events consumer for the kit (pipelines/common/consumer.py): the ingest's prepare
and commit, nothing more. The Dagster wiring builds it from the resources (definitions.py); the
benchmark and the tests build it directly."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.billing.envelope import kept_body
from pipelines.billing.ingest import SOURCE, IngestSettings, PreparedEvents, StripeIngest
from pipelines.billing.retrieve import Retriever
from pipelines.common.counters import Counters
from pipelines.common.queue_message import QueueMessage

if TYPE_CHECKING:
    import duckdb


class StripeEventConsumer:
    source = SOURCE

    def __init__(self, settings: IngestSettings, retriever: Retriever | None = None):
        self.ingest = StripeIngest(settings, retriever, source=self.source)

    def prepare(self, messages: list[QueueMessage]) -> PreparedEvents:
        return self.ingest.prepare(messages)

    def commit(self, conn: duckdb.DuckDBPyConnection, prepared: PreparedEvents) -> Counters:
        return self.ingest.commit(conn, prepared)

    def run_metadata(self) -> dict[str, int]:
        """Stripe API calls the run made (re-retrieves), for the run's metadata."""
        calls = getattr(self.ingest.retriever, "calls", None)
        return {"stripe_api_calls": sum(calls.values()) if calls else 0}

    def quarantine_body(self, body: str) -> str:  # the kit's fallback path keeps what prepare would
        return kept_body(body, None)
