"""A doorbell sensor's tick and the run it asks for, in process, as the daemon would start it."""

from __future__ import annotations

import dagster as dg


def tick_and_run(instance: dg.DagsterInstance, sensor_name: str, queue_key: str, job_name: str,
                 run_config: dict | None = None) -> dg.ExecuteInProcessResult | None:
    """Evaluate the sensor once (with its queue and store resources); when it rings, execute the job in process
    with the run request's tags and return the (successful) result; None when it stays quiet."""
    from pipelines.definitions import defs

    sensor = defs.resolve_sensor_def(sensor_name)
    with dg.build_sensor_context(instance=instance, resources={queue_key: defs.resources[queue_key],
                                                                   "store": defs.resources["store"]}) as ctx:
        tick = sensor.evaluate_tick(ctx)
    if not tick.run_requests:
        return None
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, run_config=run_config or {}, tags=tick.run_requests[0].tags)
    assert result.success, f"{job_name} failed"
    return result
