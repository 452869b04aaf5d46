"""Each queue is one QueueSpec: its resource, environment variable, pool and local queue follow
from it, and every definition name stays what it was."""

from __future__ import annotations

import dagster as dg
import pytest

from devstack import topology
from pipelines.common.consumer import QueueConsumer
from pipelines.common.factory import QueueSpec, queue_consumer_defs
from pipelines.queues import QUEUE_SPECS
from pipelines.resource_defs import build_resources
from pipelines.settings import SETTINGS
from resources.aws import SQSQueueResource
from pipelines.store_resource import MailroomStore


def test_every_queue_is_wired_from_its_spec():
    settings = {s.name for s in SETTINGS}
    resources = build_resources()
    assert [s.source for s in QUEUE_SPECS] == ["email-requests", "ses-notifications", "stripe-events"]
    assert topology.queue_names() == topology.QUEUES == tuple(s.source for s in QUEUE_SPECS)
    for spec in QUEUE_SPECS:
        assert spec.env_var in settings
        assert resources[spec.resource_key].queue_name.env_var_name == spec.env_var
        assert spec.pool == f"drain-{spec.source}"


def test_the_derived_names_of_the_three_queues():
    assert [(s.resource_key, s.env_var) for s in QUEUE_SPECS] == [
        ("email_requests_queue", "EMAIL_REQUESTS_QUEUE"), ("ses_notifications_queue", "SES_NOTIFICATIONS_QUEUE"),
        ("stripe_events_queue", "STRIPE_EVENTS_QUEUE")]


def test_a_consumer_must_implement_prepare_and_commit_and_nothing_else():
    class Half(QueueConsumer):
        source = "half"

        def prepare(self, messages):
            raise NotImplementedError

    with pytest.raises(TypeError, match="commit"):
        Half()  # type: ignore[abstract]

    class Minimal(Half):
        def commit(self, conn, prepared):
            raise NotImplementedError

    consumer = Minimal()
    assert (consumer.after_commit(None, None), consumer.run_metadata()) == ({}, {})
    assert consumer.on_receive([]) is None and consumer.request_stop() is None
    with consumer as entered:
        assert entered is consumer


def test_a_new_queue_is_a_spec():
    class Tax(QueueConsumer):
        source = "tax-events"

        def prepare(self, messages):
            raise NotImplementedError

        def commit(self, conn, prepared):
            raise NotImplementedError

    spec = QueueSpec(source="tax-events", make_consumer=lambda context, config: Tax(), op_name="drain_tax_events",
                     job_name="ingest_tax_events_job", sensor_name="tax_events_sensor",
                     job_description="Drains tax-events.", replay_op_name="replay_tax_quarantine",
                     replay_job_name="replay_tax_quarantine_job", ledgers=("tax_rows",))
    defs = dg.Definitions.merge(queue_consumer_defs(spec), dg.Definitions(resources={
        "store": MailroomStore(duckdb_path=":memory:"), "tax_events_queue": SQSQueueResource(queue_name="tax-events")}))
    job = defs.resolve_job_def("ingest_tax_events_job")
    op = job.graph.node_defs[0]
    assert op.name == "drain_tax_events" and op.pool == "drain-tax-events"
    assert op.required_resource_keys == {"store", "tax_events_queue"}
    assert defs.resolve_job_def("replay_tax_quarantine_job").graph.node_defs[0].pool == "drain-tax-events"
    assert defs.get_sensor_def("tax_events_sensor").job_name == "ingest_tax_events_job"
