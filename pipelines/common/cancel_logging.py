"""A stop an operator asked for is logged as a WARNING, without a stack trace; a real error is not.

Once a run is canceling (Terminate in the UI, Ctrl-C on `make dev`, a drain that stopped cleanly on
a signal), Dagster still logs what the stop causes as errors with the interrupt's traceback:
RUN_CANCELED, the STEP_FAILURE of a step the interrupt ended, "Step ... finished without success
or failure event" for a step process that ended without either. QuietCancel, a logging filter on
a run's log manager (mailroom_executor installs it) or a step's (a drain's clean stop does,
pipelines/common/factory.py), lowers exactly those to WARNING and leaves the stack out, in the log
and in the stored event. An op's exception, an exception while canceling, a step that dies while
nobody asked the run to stop: unchanged, ERROR with the traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import dagster as dg
from dagster._core.events import JobCanceledData
from dagster._core.execution.plan.objects import ErrorSource
from dagster._core.log_manager import LOG_RECORD_EVENT_ATTR, get_log_record_event, has_log_record_event
from dagster._utils.error import SerializableErrorInfo

INTERRUPTS = ("DagsterExecutionInterruptedError", "KeyboardInterrupt")
UNFINISHED_STEP = "finished without success or failure event"
STOPPING = (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)


class QuietCancel(logging.Filter):
    """On a run's (or a step's) log manager: once the run is canceling, what the stop makes Dagster
    log as errors (RUN_CANCELED, a STEP_FAILURE whose cause is the interrupt, a step that ended
    without either) becomes a WARNING, and the interrupt's stack trace is left out. Anything else,
    and anything while nobody asked the run to stop, passes unchanged."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str) -> None:
        super().__init__()
        self.instance = instance
        self.run_id = run_id

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        event = get_log_record_event(record) if has_log_record_event(record) else None
        if event is None:
            if UNFINISHED_STEP in record.getMessage() and self._stopping():
                _lower(record)
        elif event.event_type == dg.DagsterEventType.RUN_CANCELED:
            error = event.event_specific_data.error if event.event_specific_data else None
            if error is None or error.cls_name in INTERRUPTS:
                _lower(record)
                data = JobCanceledData(None)  # the reason is in the run's CANCELING event
                setattr(record, LOG_RECORD_EVENT_ATTR, event._replace(event_specific_data=data))
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            data = event.event_specific_data
            if data.error_source == ErrorSource.INTERRUPT and self._stopping():
                _lower(record)
                data = data._replace(error=_without_stack(data.error))
                setattr(record, LOG_RECORD_EVENT_ATTR, event._replace(event_specific_data=data))
        return True

    def _stopping(self) -> bool:
        run = self.instance.get_run_by_id(self.run_id)
        return run is not None and run.status in STOPPING


def _lower(record: logging.LogRecord) -> None:
    record.levelno, record.levelname = logging.WARNING, "WARNING"


def _without_stack(error: SerializableErrorInfo | None) -> SerializableErrorInfo | None:
    return error and SerializableErrorInfo(message=error.message.strip(), stack=[], cls_name=error.cls_name)


def quiet_cancel(context: Any) -> None:
    """Install QuietCancel on an op's log manager (the step's), before a clean stop raises."""
    context.log.addFilter(QuietCancel(context.instance, context.run_id))
