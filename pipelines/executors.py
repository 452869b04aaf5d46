"""The code location's executor: Dagster's default locally, Celery workers in production.

`mailroom_executor` takes the default executor's config (`multiprocess` / `in_process`) and
decides when a run starts, not when the code location is imported:

- MAILROOM_EXECUTOR unset or `multiprocess`: Dagster's default (each step in a subprocess), the
  subprocesses forked from a forkserver that has imported the code location once.
- MAILROOM_EXECUTOR=`celery`: each step goes to the Celery broker at CELERY_BROKER_URL
  (results over CELERY_RESULT_BACKEND, default `rpc://`) on queue CELERY_TASK_QUEUE (default
  `dagster`) and runs in a `dagster-celery` worker listening on that queue.
  The multiprocess block's `retries` setting applies; an explicit `in_process` block still runs
  in process (debugging a single run).

Whichever it is, a run interrupted by a signal (SIGINT or SIGTERM reaching the run worker, at
any point of the plan: before a drain installs its own stop, between steps, while an asset runs)
ends CANCELED, not FAILED: the executor marks the run CANCELING before Dagster decides how the
interrupted run ends, as a Terminate from the UI would. A signal is an operator's stop, not a fault.

A stop is logged as one, not as an error (pipelines/common/cancel_logging.py): the executor puts
QuietCancel on the run's log manager.

Jobs run with `execute_in_process` or `materialize` ignore executors, so tests are unaffected.
"""

from __future__ import annotations

import dagster as dg
from dagster_celery import celery_executor

from pipelines.common.cancel_logging import QuietCancel

EXECUTOR_ENV = "MAILROOM_EXECUTOR"
BROKER_ENV = "CELERY_BROKER_URL"
BACKEND_ENV = "CELERY_RESULT_BACKEND"
QUEUE_ENV = "CELERY_TASK_QUEUE"
DEFAULT_BACKEND = "rpc://"
DEFAULT_QUEUE = "dagster"
CHOICES = ("multiprocess", "celery")


def selected_executor() -> str:
    choice = dg.EnvVar(EXECUTOR_ENV).get_value("") or "multiprocess"
    if choice not in CHOICES:
        raise dg.DagsterInvariantViolationError(
            f"{EXECUTOR_ENV} must be one of {', '.join(CHOICES)} (or unset), got {choice!r}"
        )
    return choice


def celery_config(retries: dict) -> dict:
    broker = dg.EnvVar(BROKER_ENV).get_value()
    if not broker:
        # The URL may carry a password: name the variable, never print its value.
        raise dg.DagsterInvariantViolationError(f"{EXECUTOR_ENV}=celery needs {BROKER_ENV}")
    return {
        "broker": broker,
        "backend": dg.EnvVar(BACKEND_ENV).get_value() or DEFAULT_BACKEND,
        "config_source": {
            "task_default_queue": dg.EnvVar(QUEUE_ENV).get_value() or DEFAULT_QUEUE,
        },
        "retries": retries,
    }


class _SignalCancels(dg.Executor):
    """The chosen executor, unchanged, except that an interrupt ends the run as canceled."""

    def __init__(self, inner: dg.Executor) -> None:
        self.inner = inner

    def __getattr__(self, name: str):
        return getattr(self.inner, name)  # what an executor's own steps ask of it (Celery: app_args)

    @property
    def retries(self):
        return self.inner.retries

    @property
    def step_dependency_config(self):
        return self.inner.step_dependency_config

    def execute(self, plan_context, execution_plan):
        # On the run's log manager, which also logs how the run ended once this returns.
        plan_context.log.addFilter(QuietCancel(plan_context.instance, plan_context.run_id))
        try:
            yield from self.inner.execute(plan_context, execution_plan)
        except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
            mark_canceling(plan_context.instance, plan_context.run_id, "the run worker received a stop signal")
            raise


def mark_canceling(instance: dg.DagsterInstance, run_id: str, reason: str) -> None:
    """CANCELING, unless the run is already stopping or over: Dagster then ends it CANCELED."""
    run = instance.get_run_by_id(run_id)
    if run is not None and run.status in (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED):
        instance.report_run_canceling(run, message=reason)


def with_forkserver(multiprocess: dict) -> dict:
    """Steps fork from a server that imported the code location once, instead of each spawning a
    fresh interpreter that imports it again (~2.5 s of CPU per step, which adds up on a run of a
    dozen rollups and checks). A `start_method` given in the run config wins."""
    return {**multiprocess, "start_method": multiprocess.get("start_method") or {"forkserver": {}}}


def _requirements(config):
    # Celery, like multiprocess, rebuilds the job in another process from a persistent instance.
    if "in_process" in config:
        return []
    return dg.multiple_process_executor_requirements()


@dg.executor(
    name="mailroom_executor",
    config_schema=dg.multi_or_in_process_executor.config_schema,
    requirements=_requirements,
)
def mailroom_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    config = init_context.executor_config
    if "in_process" in config:
        return _SignalCancels(dg.multi_or_in_process_executor.executor_creation_fn(init_context))
    if selected_executor() == "multiprocess":
        return _SignalCancels(dg.multi_or_in_process_executor.executor_creation_fn(dg.InitExecutorContext(
            job=init_context.job, executor_def=init_context.executor_def,
            executor_config={"multiprocess": with_forkserver(config["multiprocess"])},
            instance=init_context.instance)))
    return _SignalCancels(celery_executor.executor_creation_fn(
        dg.InitExecutorContext(
            job=init_context.job,
            executor_def=celery_executor,
            executor_config=celery_config(config["multiprocess"]["retries"]),
            instance=init_context.instance,
        )
    ))
