"""Property test: any mutation of a Stripe event, in either envelope, is ingested or refused with a
reason; nothing raises, and the kit's fallback for bugs (internal_errors) is never needed."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import duckdb
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import stripe_samples as s
from pipelines.billing.consumer import StripeEventConsumer
from pipelines.billing.envelope import EnvelopeSettings
from pipelines.billing.ingest import IngestSettings
from pipelines.common.consumer import process_batch
from pipelines.common.queue_message import QueueMessage
from pipelines.schema import ensure_schema
from pipelines.store.store import Store
from tests.paths import FIXTURES as SHARED_FIXTURES

SECRET = "whsec_mutations"
SETTINGS = IngestSettings(EnvelopeSettings.from_strings(s.SOURCE, SECRET), "pypi", "pypi.org")
FIXTURES = SHARED_FIXTURES / "stripe"

BASES: list[dict] = [e for e in s.history(2, renewals=1)[:40]] + [
    json.loads(p.read_text()) for p in sorted(FIXTURES.glob("stripe-event_*basil*.json"))]

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                    st.sampled_from(["", "evt_", "active", "zombie", "usd", "\ud800", "x" * 5000]))
VALUES = st.recursive(SCALARS, lambda c: st.one_of(st.lists(c, max_size=3),
                                                   st.dictionaries(st.text(max_size=8), c, max_size=3)),
                      max_leaves=8)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(_paths(v, (*prefix, i)))
    return out


@st.composite
def mutated_events(draw) -> dict:
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(VALUES)
        else:
            parent[path[-1]] = draw(VALUES)
    return doc


def _dumps(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=False, allow_nan=False).encode("utf-8", "surrogatepass") \
        .decode("utf-8", "replace")


@st.composite
def messages(draw) -> QueueMessage:
    doc = draw(mutated_events())
    n = draw(st.integers(0, 10**9))
    if draw(st.booleans()):
        body = _dumps({"source": s.SOURCE, "detail-type": doc.get("type") if isinstance(doc, dict) else None,
                       "detail": doc})
        return QueueMessage(f"eb{n}", "rh", body)
    body = _dumps(doc)
    attrs = {"Stripe-Signature": stripe.WebhookSignature.generate_signature_header(body, SECRET)}
    return QueueMessage(f"wh{n}", "rh", body, attributes=attrs)


_DB = Path(tempfile.mkdtemp(prefix="billing-mutations-")) / "m.duckdb"


class NoSuchObject:
    """The re-retrieve finds nothing (the mutated ids exist nowhere)."""

    def __call__(self, object_type: str, object_id: str) -> dict | None:
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), min_size=1, max_size=6))
def test_mutated_events_are_ingested_or_refused_never_raised(batch):
    consumer = StripeEventConsumer(SETTINGS, NoSuchObject())
    prepared = consumer.prepare(batch)
    assert set(prepared.outcomes) == {m.sqs_message_id for m in batch}
    assert all(r is None or (isinstance(r, str) and r) for r in prepared.outcomes.values())
    with duckdb.connect(str(_DB)) as conn:
        ensure_schema(conn)
        counters = process_batch(Store.over(conn), consumer, batch)
    assert counters["internal_errors"] == 0, counters
