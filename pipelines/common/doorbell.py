"""Doorbell sensors: look at queue depth and the instance's runs, nothing else (docs/architecture.md).

A sensor never receives, deletes or writes. It asks for one drain run when the queue has
messages and no drain run of the same job is queued or in progress. The run key is
derived from the newest finished run of the job, so a preview tick or a repeated tick
asks for the same run and Dagster deduplicates it.
"""

from __future__ import annotations

import dagster as dg

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def doorbell_decision(instance: dg.DagsterInstance, job_name: str, queue_name: str, depth: int):
    """Pure decision given depth and the instance: RunRequest or SkipReason."""
    if depth <= 0:
        return dg.SkipReason(f"queue {queue_name} is empty")
    in_flight = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=1
    )
    if in_flight:
        run = in_flight[0].dagster_run
        return dg.SkipReason(f"{job_name} run {run.run_id} is already {run.status.value}")
    newest = instance.get_run_records(filters=dg.RunsFilter(job_name=job_name), limit=1)
    after = newest[0].dagster_run.run_id if newest else "none"
    return dg.RunRequest(run_key=f"{queue_name}:after:{after}", tags={"queue": queue_name,
                                                                     "queue_depth": str(depth)})


def queue_doorbell_sensor(*, name: str, job: dg.JobDefinition, queue_resource_key: str,
                          minimum_interval_seconds: int = 15, description: str | None = None,
                          default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
                          ) -> dg.SensorDefinition:
    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        required_resource_keys={queue_resource_key},
        default_status=default_status,
        description=description or f"Requests {job.name} when the {queue_resource_key} queue has messages.",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        queue = getattr(context.resources, queue_resource_key)
        return doorbell_decision(context.instance, job.name, queue.queue_name, queue.depth())

    return _sensor
