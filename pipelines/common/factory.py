"""queue_consumer_defs(spec): a queue's drain op + job, doorbell sensor and replay job, from its QueueSpec.

The op opens a Store on the `store` resource (the ledgers, pipelines/store_resource.py), builds the consumer with
`spec.make_consumer(context, config)` (config: the op's typed run config; None for a replay),
runs it with run_consumer and returns the run's counters as its output and metadata. The op
uses the consumer as a context manager, so what it holds (a verify pool, a sending pool) is
closed when the run ends, and adds the consumer's `run_metadata()`.

From the spec's `source` follow the queue's resource key (`<source>_queue`, dashes as
underscores), its environment variable (`<SOURCE>_QUEUE`) and its pool (`drain-<source>`).

Ledgers: the tables a queue's drain writes are declared by its domain as asset specs, and their
keys named in the spec's `ledgers`; every drain or replay run that took messages reports a
materialization of each (plus the shared `quarantine` table) with its row count and the run's
counters, so lineage runs from each queue's tables to the rollups that depend on them.

Pools: each queue's drain and replay ops share a pool of their own (`drain-<source>`, limit 1 by
dagster.yaml's default_limit, so a new queue needs no entry there): one drain per queue at a time, different queues side by side.
On PostgreSQL an operator may raise a queue's pool limit to N (`dagster instance concurrency set
drain-<source> N`); the doorbell then asks for up to N runs, which SQS hands different messages.
They hold the DuckDB
file only while they commit (pipelines/store/store.py); DuckDB's process lock and the resource's
lock retry make their commits take turns (docs/operations.md, "Ad-hoc queries").

Stops: SIGINT / SIGTERM / Terminate in the UI stop the drain cleanly (pipelines/common/stop.py):
no new messages, what was sent is recorded, nothing left pending that the transport never saw;
the run then ends as canceled, not failed.

No `from __future__ import annotations` here: Dagster reads the ops' config annotation at
definition time, and it names a class given to the factory.
"""

from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Optional

import dagster as dg
from pydantic import Field

from pipelines.common.cancel_logging import quiet_cancel
from pipelines.common.consumer import QueueConsumer, replay_quarantine, run_consumer
from pipelines.common.doorbell import queue_doorbell_sensor
from pipelines.common.drain import DrainOptions
from pipelines.common.ledgers import QUARANTINE, report_ledgers
from pipelines.common.stop import stop_on_signals
from pipelines.store.store import Store

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


# (op context, the drain op's run config, or None for a replay) -> the consumer
MakeConsumer = Callable[[Any, Optional[DrainConfig]], QueueConsumer]


@dataclass(frozen=True)
class QueueSpec:
    """Everything the kit needs to know of a queue to make its Dagster definitions."""
    source: str                      # the SQS queue's local name and the quarantine source, e.g. "stripe-events"
    make_consumer: MakeConsumer
    op_name: str
    job_name: str
    sensor_name: str
    job_description: str
    sensor_description: str | None = None
    op_description: str | None = None
    config_class: type[DrainConfig] = DrainConfig
    resource_keys: frozenset[str] = frozenset()   # besides store and the queue's own
    connect_config: Mapping[str, Any] | None = None   # DuckDB settings of the run's connection
    ledgers: tuple[str, ...] = ()    # asset keys of the tables the drain writes; quarantine is added
    after_run: AfterRun | None = None
    replay_op_name: str | None = None    # with replay_job_name: a replay job for the quarantine
    replay_job_name: str | None = None
    replay_description: str | None = None
    job_tags: Mapping[str, str] | None = None   # default {"queue": source}

    @property
    def resource_key(self) -> str:
        return f"{self.source.replace('-', '_')}_queue"

    @property
    def env_var(self) -> str:
        """The environment variable holding the queue's name in this deployment."""
        return f"{self.source.upper().replace('-', '_')}_QUEUE"

    @property
    def pool(self) -> str:
        return pool_for(self.source)


def _store(context: Any, connect_config: Mapping[str, Any] | None, hold_seconds: float) -> Store:
    return context.resources.store.ledgers(config=connect_config, hold_seconds=hold_seconds)


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


def queue_consumer_defs(spec: QueueSpec) -> dg.Definitions:
    keys = {"store", *spec.resource_keys}
    ledger_keys = [*dict.fromkeys([*spec.ledgers, QUARANTINE])]
    source, queue_key, config_class = spec.source, spec.resource_key, spec.config_class

    @dg.op(name=spec.op_name, pool=spec.pool, required_resource_keys=keys | {queue_key},
           tags={"queue": source}, description=spec.op_description)
    def drain_op(context: dg.OpExecutionContext, config: config_class) -> dg.Output[dict]:  # type: ignore[valid-type]
        with ExitStack() as stack:
            stop = stack.enter_context(stop_on_signals())
            consumer = stack.enter_context(spec.make_consumer(context, config))
            store = stack.enter_context(_store(context, spec.connect_config, config.connection_hold_seconds))
            report = run_consumer(getattr(context.resources, queue_key), consumer, store,
                                  config.drain_options(), log=context.log, stop=stop)
            meta = {**report.as_metadata(), **consumer.run_metadata()}
            if report.counters["received"]:
                report_ledgers(context, ledger_keys, report.counters)
            if report.stopped:
                _end_as_canceled(context, source, stop.reason, meta)
        meta.update(spec.after_run(context) if spec.after_run else {})
        context.log.info(f"{source}: {meta}")
        return dg.Output(meta, metadata=meta)

    tags = dict(spec.job_tags) if spec.job_tags is not None else {"queue": source}

    @dg.job(name=spec.job_name, description=spec.job_description, tags=tags)
    def drain_job():
        drain_op()

    sensor = queue_doorbell_sensor(name=spec.sensor_name, job=drain_job, queue_resource_key=queue_key,
                                   description=spec.sensor_description, pool=spec.pool, store_resource_key="store")
    jobs = [drain_job]

    if spec.replay_job_name:
        @dg.op(name=spec.replay_op_name or f"replay_{spec.op_name}", pool=spec.pool, required_resource_keys=keys,
               description=spec.replay_description)
        def replay_op(context: dg.OpExecutionContext, config: ReplayConfig) -> dg.Output[dict]:
            with ExitStack() as stack:
                consumer = stack.enter_context(spec.make_consumer(context, None))
                store = stack.enter_context(_store(context, spec.connect_config, 0.0))
                counters = replay_quarantine(store, consumer, config.limit, log=context.log)
                if counters["messages"]:
                    report_ledgers(context, ledger_keys, counters)
            meta = {**counters.as_metadata(), **(spec.after_run(context) if spec.after_run else {})}
            context.log.info(f"{source} replay: {meta}")
            return dg.Output(meta, metadata=meta)

        @dg.job(name=spec.replay_job_name, description=spec.replay_description)
        def replay_job():
            replay_op()

        jobs.append(replay_job)

    return dg.Definitions(jobs=jobs, sensors=[sensor])
