"""The doorbell decision: exact RunRequest / SkipReason for each instance state."""

import dagster as dg
import pytest

from pipelines.common.doorbell import BACKLOG_PER_RUN, doorbell_decision, queue_doorbell_sensor, runs_allowed

pytestmark = pytest.mark.xdist_group("doorbell")   # one Dagster instance for the module


@dg.op
def noop():
    return None


@dg.job
def drain_job():
    noop()


@pytest.fixture(scope="module")
def _module_instance():
    with dg.instance_for_test() as inst:   # ~2 s to create: one per module, wiped per test
        yield inst


@pytest.fixture
def instance(_module_instance):
    _module_instance.wipe()
    return _module_instance


def test_empty_queue_skips(instance):
    result = doorbell_decision(instance, "drain_job", "q", 0)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == "queue q is empty"


def test_messages_and_no_runs_request_a_run(instance):
    result = doorbell_decision(instance, "drain_job", "q", 3)
    assert isinstance(result, dg.RunRequest)
    assert result.run_key == "q:after:none"
    assert result.tags["queue_depth"] == "3"
    # The same state asks for the same run (a preview tick is deduplicated).
    assert doorbell_decision(instance, "drain_job", "q", 7).run_key == "q:after:none"


def test_in_flight_run_skips_and_finished_run_moves_the_key(instance):
    run = instance.create_run_for_job(drain_job, run_id="11111111-1111-1111-1111-111111111111")
    # A created run is NOT_STARTED: in flight.
    skip = doorbell_decision(instance, "drain_job", "q", 5)
    assert isinstance(skip, dg.SkipReason)
    assert run.run_id in skip.skip_message
    instance.report_run_failed(run)
    again = doorbell_decision(instance, "drain_job", "q", 5)
    assert isinstance(again, dg.RunRequest)
    assert again.run_key == f"q:after:{run.run_id}"


def test_other_jobs_runs_do_not_block(instance):
    @dg.job(name="other_job")
    def other_job():
        noop()

    instance.create_run_for_job(other_job)
    assert isinstance(doorbell_decision(instance, "drain_job", "q", 1), dg.RunRequest)


class FakeDepthQueue(dg.ConfigurableResource):
    queue_name: str
    fixed_depth: int

    def depth(self) -> int:
        return self.fixed_depth


def test_sensor_reads_depth_from_its_resource(instance):
    sensor = queue_doorbell_sensor(name="drain_sensor", job=drain_job, queue_resource_key="the_queue")
    ctx = dg.build_sensor_context(instance=instance,
                                  resources={"the_queue": FakeDepthQueue(queue_name="q", fixed_depth=2)})
    # evaluate_tick is the daemon's path (direct invocation passes resources differently).
    tick = sensor.evaluate_tick(ctx)
    assert [r.run_key for r in tick.run_requests] == ["q:after:none"]
    ctx = dg.build_sensor_context(instance=instance,
                                  resources={"the_queue": FakeDepthQueue(queue_name="q", fixed_depth=0)})
    tick = sensor.evaluate_tick(ctx)
    assert tick.run_requests == []
    assert tick.skip_message == "queue q is empty"


# ---- several runs per queue (the PostgreSQL store) ---------------------------------------------------

def test_a_backlog_asks_for_one_run_per_share_up_to_the_limit(instance):
    assert doorbell_decision(instance, "drain_job", "q", BACKLOG_PER_RUN, max_runs=4).run_key == "q:after:none"
    many = doorbell_decision(instance, "drain_job", "q", 10 * BACKLOG_PER_RUN, max_runs=4)
    assert [r.run_key for r in many] == ["q:after:none", "q:after:none:1", "q:after:none:2", "q:after:none:3"]
    three = doorbell_decision(instance, "drain_job", "q", 3 * BACKLOG_PER_RUN, max_runs=4)
    assert len(three) == 3


def test_runs_in_flight_count_against_the_limit(instance):
    runs = [instance.create_run_for_job(drain_job) for _ in range(3)]
    more = doorbell_decision(instance, "drain_job", "q", 10 * BACKLOG_PER_RUN, max_runs=4)
    assert isinstance(more, dg.RunRequest) and more.run_key == f"q:after:{runs[-1].run_id}"
    instance.create_run_for_job(drain_job)
    full = doorbell_decision(instance, "drain_job", "q", 10 * BACKLOG_PER_RUN, max_runs=4)
    assert isinstance(full, dg.SkipReason) and "4 in flight, 4 allowed" in full.skip_message


def test_duckdb_allows_one_run_whatever_the_pool(instance):
    instance.event_log_storage.set_concurrency_slots("drain-q", 4)
    assert runs_allowed(instance, "drain-q", "duckdb") == 1
    assert runs_allowed(instance, "drain-q", "postgres") == 4
    assert runs_allowed(instance, "drain-unset", "postgres") == 1   # no limit set: one


def test_the_sensor_asks_for_several_runs_on_postgres(instance):
    instance.event_log_storage.set_concurrency_slots("drain-q", 2)

    class Engine(dg.ConfigurableResource):
        engine: str

    sensor = queue_doorbell_sensor(name="drain_sensor", job=drain_job, queue_resource_key="the_queue",
                                   pool="drain-q", store_resource_key="store")
    for engine, expected in (("postgres", 2), ("duckdb", 1)):
        ctx = dg.build_sensor_context(instance=instance, resources={
            "the_queue": FakeDepthQueue(queue_name="q", fixed_depth=10 * BACKLOG_PER_RUN),
            "store": Engine(engine=engine)})
        assert len(sensor.evaluate_tick(ctx).run_requests) == expected
