"""queue_consumer_defs: a queue's drain op + job, doorbell sensor and replay job, from its consumer.

The op opens a Store on the `duckdb` resource, builds the consumer with `make_consumer(context)`,
runs it with run_consumer and returns the run's counters as its output and metadata. A consumer that holds
processes or threads (a verify pool, a sending pool) is also a context manager; the op enters it
and closes it when the run ends. A consumer may add facts about the run (`run_metadata()`).

Ledgers: the tables a queue's drain writes are declared by its domain as asset specs, and their
keys handed in as `ledgers`; every drain or replay run that took messages reports a
materialization of each (plus the shared `quarantine` table) with its row count and the run's
counters, so lineage runs from each queue's tables to the rollups that depend on them.

Pools: each queue's drain and replay ops share a pool of their own (`drain-<source>`, limit 1 in
dagster.yaml): one drain per queue at a time, different queues side by side. They hold the DuckDB
file only while they commit (pipelines/store/store.py); DuckDB's process lock and the resource's
lock retry make their commits take turns (docs/operations.md, "Ad-hoc queries").

Stops: SIGINT / SIGTERM / Terminate in the UI stop the drain cleanly (pipelines/common/stop.py):
no new messages, what was sent is recorded, nothing left pending that the transport never saw;
the run then ends as canceled, not failed.

No `from __future__ import annotations` here: Dagster reads the ops' config annotation at
definition time, and it names a class given to the factory.
"""

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import dagster as dg
from pydantic import Field

from pipelines.common.cancel_logging import quiet_cancel
from pipelines.common.consumer import Consumer, replay_quarantine, run_consumer
from pipelines.common.doorbell import queue_doorbell_sensor
from pipelines.common.drain import DrainOptions
from pipelines.common.ledgers import QUARANTINE, report_ledgers
from pipelines.common.stop import stop_on_signals
from pipelines.store.store import Store

MakeConsumer = Callable[[Any], Consumer]     # (op context) -> Consumer
AfterRun = Callable[[Any], dict[str, Any]]   # (op context) -> extra metadata


class DrainConfig(dg.Config):
    """Run config of a drain op; a queue may subclass it to change defaults or add its own fields."""
    max_messages: int = Field(default=10_000, description="Messages drained per run at most.")
    max_seconds: float = Field(default=240.0, description="Stop draining after this long.")
    batch_size: int = Field(default=500, description="Messages per commit-then-delete batch.")
    wait_seconds: int = Field(default=1, description="SQS long-poll wait per receive.")
    visibility_share: float = Field(default=0.5, description="Flush a batch once its oldest message has been in "
                                    "flight this share of the queue's visibility timeout.")
    receivers: int = Field(default=8, description="SQS receive calls in flight at once (the next batch is "
                           "received while this one is handled).")
    deleters: int = Field(default=8, description="SQS delete calls in flight at once; 0 deletes one call after "
                          "another.")
    extend_visibility: bool = Field(default=True, description="Extend the visibility of a batch whose handling "
                                    "runs long, so its messages are not delivered again meanwhile.")
    connection_hold_seconds: float = Field(default=0.0, description="0: a DuckDB connection per commit, so the "
                                           "file is free while the run receives, sends or waits. More: one "
                                           "connection serves consecutive commits for at most this long.")

    def drain_options(self) -> DrainOptions:
        return DrainOptions(max_messages=self.max_messages, max_seconds=self.max_seconds,
                            batch_size=self.batch_size, wait_seconds=self.wait_seconds,
                            visibility_share=self.visibility_share, receivers=self.receivers,
                            deleters=self.deleters, extend_visibility=self.extend_visibility)


class ReplayConfig(dg.Config):
    limit: int = 10_000


def _entered(stack: ExitStack, consumer: Consumer) -> Consumer:
    if hasattr(consumer, "__enter__") and hasattr(consumer, "__exit__"):
        stack.enter_context(consumer)  # type: ignore[arg-type]
    return consumer


def _store(context: Any, connect_config: dict | None, hold_seconds: float) -> Store:
    duckdb = context.resources.duckdb
    return Store(lambda: duckdb.connect(config=connect_config), hold_seconds)


def pool_for(source: str) -> str:
    return f"drain-{source}"


def _end_as_canceled(context: Any, source: str, reason: str | None, meta: dict) -> None:
    """Record the stop and end the run as canceled: Dagster cancels a run that is CANCELING when its
    step is interrupted (a termination from the UI already set it; a bare signal did not)."""
    context.log.warning(f"{source}: stopped ({reason}); {meta}")
    run = context.instance.get_run_by_id(context.run_id)
    if run is not None and run.status not in (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED):
        context.instance.report_run_canceling(run, message=f"{source} drain stopped: {reason}")
    quiet_cancel(context)  # the step's failure from this interrupt is then a warning, not an error
    raise dg.DagsterExecutionInterruptedError(f"{source} drain stopped cleanly: {reason}")


def queue_consumer_defs(
    *, source: str, queue_resource_key: str, make_consumer: MakeConsumer,
    op_name: str, job_name: str, sensor_name: str,
    config_class: type[DrainConfig] = DrainConfig,
    resource_keys: frozenset[str] | set[str] = frozenset(),
    connect_config: dict | None = None,
    after_run: AfterRun | None = None,
    replay_op_name: str | None = None, replay_job_name: str | None = None,
    make_replay_consumer: MakeConsumer | None = None,
    op_description: str | None = None, job_description: str | None = None,
    replay_description: str | None = None, job_tags: dict[str, str] | None = None,
    sensor_description: str | None = None,
    ledgers: Sequence[str] = (), pool: str | None = None,
) -> dg.Definitions:
    """`connect_config`: DuckDB settings for the run's connection (e.g. {"threads": 1}).
    `ledgers`: asset keys of the tables the consumer writes (declared by the domain as asset specs);
    `quarantine` is added. `pool`: the ops' concurrency pool (default `drain-<source>`)."""
    keys = {"duckdb", *resource_keys}
    ledger_keys = [*dict.fromkeys([*ledgers, QUARANTINE])]
    pool = pool or pool_for(source)

    @dg.op(name=op_name, pool=pool, required_resource_keys=keys | {queue_resource_key},
           tags={"queue": source}, description=op_description)
    def drain_op(context: dg.OpExecutionContext, config: config_class) -> dg.Output[dict]:  # type: ignore[valid-type]
        with ExitStack() as stack:
            stop = stack.enter_context(stop_on_signals())
            consumer = _entered(stack, make_consumer(context))
            store = stack.enter_context(_store(context, connect_config, config.connection_hold_seconds))
            report = run_consumer(getattr(context.resources, queue_resource_key), consumer, store,
                                  config.drain_options(), log=context.log, stop=stop)
            run_metadata = getattr(consumer, "run_metadata", None)
            meta = {**report.as_metadata(), **(run_metadata() if run_metadata else {})}
            if report.counters["received"]:
                report_ledgers(context, ledger_keys, report.counters)
            if report.stopped:
                _end_as_canceled(context, source, stop.reason, meta)
        meta.update(after_run(context) if after_run else {})
        context.log.info(f"{source}: {meta}")
        return dg.Output(meta, metadata=meta)

    @dg.job(name=job_name, description=job_description, tags=job_tags if job_tags is not None else {"queue": source})
    def drain_job():
        drain_op()

    sensor = queue_doorbell_sensor(name=sensor_name, job=drain_job, queue_resource_key=queue_resource_key,
                                   description=sensor_description)
    jobs = [drain_job]

    if replay_job_name:
        replay_consumer = make_replay_consumer or make_consumer

        @dg.op(name=replay_op_name or f"replay_{op_name}", pool=pool, required_resource_keys=keys,
               description=replay_description)
        def replay_op(context: dg.OpExecutionContext, config: ReplayConfig) -> dg.Output[dict]:
            with ExitStack() as stack:
                consumer = _entered(stack, replay_consumer(context))
                store = stack.enter_context(_store(context, connect_config, 0.0))
                counters = replay_quarantine(store, consumer, config.limit, log=context.log)
                if counters["messages"]:
                    report_ledgers(context, ledger_keys, counters)
            meta = {**counters.as_metadata(), **(after_run(context) if after_run else {})}
            context.log.info(f"{source} replay: {meta}")
            return dg.Output(meta, metadata=meta)

        @dg.job(name=replay_job_name, description=replay_description)
        def replay_job():
            replay_op()

        jobs.append(replay_job)

    return dg.Definitions(jobs=jobs, sensors=[sensor])
