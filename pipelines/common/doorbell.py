"""Doorbell sensors: look at queue depth and the instance's runs, nothing else (docs/architecture.md).

A sensor never receives, deletes or writes. It asks for a drain run when the queue has messages
and fewer drain runs of the same job are queued or in progress than the queue may have at once:
one on the DuckDB store (one writer), and on PostgreSQL the limit of the queue's pool
(`drain-<source>`, set with `dagster instance concurrency set`), one more run per BACKLOG_PER_RUN
waiting messages. The run keys are derived from the newest run of the job, so a preview tick or a
repeated tick asks for the same runs and Dagster deduplicates them.
"""

from __future__ import annotations

import math

import dagster as dg

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
# Waiting messages that justify one more concurrent run (a run's default batch is 500, its default
# budget 10,000): a short backlog is drained by one run instead of N that each find little.
BACKLOG_PER_RUN = 2_000


def doorbell_decision(instance: dg.DagsterInstance, job_name: str, queue_name: str, depth: int,
                      max_runs: int = 1):
    """Pure decision given depth, the instance and the runs allowed at once: a RunRequest, a list of
    them, or a SkipReason."""
    if depth <= 0:
        return dg.SkipReason(f"queue {queue_name} is empty")
    in_flight = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=max(1, max_runs)
    )
    wanted = min(max(1, max_runs), math.ceil(depth / BACKLOG_PER_RUN))
    if len(in_flight) >= wanted:
        run = in_flight[0].dagster_run
        more = f" ({len(in_flight)} in flight, {max_runs} allowed)" if max_runs > 1 else ""
        return dg.SkipReason(f"{job_name} run {run.run_id} is already {run.status.value}{more}")
    newest = instance.get_run_records(filters=dg.RunsFilter(job_name=job_name), limit=1)
    after = newest[0].dagster_run.run_id if newest else "none"
    tags = {"queue": queue_name, "queue_depth": str(depth)}
    requests = [dg.RunRequest(run_key=f"{queue_name}:after:{after}" + (f":{k}" if k else ""), tags=tags)
                for k in range(wanted - len(in_flight))]
    return requests[0] if len(requests) == 1 else requests


def runs_allowed(instance: dg.DagsterInstance, pool: str | None, engine: str) -> int:
    """How many drain runs of one queue may run at once: 1 on DuckDB, the pool's limit on PostgreSQL."""
    if engine != "postgres" or pool is None:
        return 1
    limit = instance.event_log_storage.get_concurrency_info(pool).limit
    return max(1, int(limit or 1))


def queue_doorbell_sensor(*, name: str, job: dg.JobDefinition, queue_resource_key: str,
                          minimum_interval_seconds: int = 15, description: str | None = None,
                          default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
                          pool: str | None = None, store_resource_key: str | None = None,
                          ) -> dg.SensorDefinition:
    """`pool` and `store_resource_key`: the drain op's pool and the resource whose `engine` says
    whether several runs may drain the queue at once (without them: one at a time)."""
    keys = {queue_resource_key} | ({store_resource_key} if store_resource_key else set())

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        required_resource_keys=keys,
        default_status=default_status,
        description=description or f"Requests {job.name} when the {queue_resource_key} queue has messages.",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        queue = getattr(context.resources, queue_resource_key)
        engine = getattr(context.resources, store_resource_key).engine if store_resource_key else "duckdb"
        return doorbell_decision(context.instance, job.name, queue.queue_name, queue.depth(),
                                 runs_allowed(context.instance, pool, engine))

    return _sensor
