"""Submitting an operator job to the Dagster instance, as `dagster job launch` does, and reading
how its run ended.

The run is created through the code location of workspace.yaml (which checks the run config
against the job's schema) and submitted to the instance's run coordinator: under `make dev` (and
in production) the daemon then starts it, exactly as a launch from the UI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


class LaunchError(RuntimeError):
    pass


def launch(instance: dg.DagsterInstance, workspace_file: Path, job_name: str, run_config: Mapping[str, Any],
           tags: Mapping[str, str] | None = None) -> str:
    """Create the run through the code location and submit it; returns its run id."""
    from dagster import __version__
    from dagster._cli.job import _create_run
    from dagster._cli.workspace.cli_target import (WorkspaceOpts, get_code_location_from_workspace,
                                                   get_remote_job_from_remote_repo,
                                                   get_remote_repository_from_code_location,
                                                   get_workspace_from_cli_opts)
    from click import ClickException
    from dagster._core.errors import DagsterError

    try:
        with get_workspace_from_cli_opts(instance, version=__version__,
                                         workspace_opts=WorkspaceOpts(workspace=(str(workspace_file),)),
                                         log_level="WARNING") as workspace:
            location = get_code_location_from_workspace(workspace, None)
            repo = get_remote_repository_from_code_location(location, None)
            job = get_remote_job_from_remote_repo(repo, job_name)
            run = _create_run(instance=instance, code_location=location, remote_repo=repo, remote_job=job,
                              run_config=dict(run_config), tags=dict(tags or {}), op_selection=None, run_id=None)
            return instance.submit_run(run.run_id, workspace).run_id
    except (DagsterError, ClickException) as exc:
        raise LaunchError(f"{job_name} was not launched: {exc}") from None


@dataclass
class Outcome:
    status: str
    figures: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def wait(instance: dg.DagsterInstance, run_id: str, timeout: float, poll: float = 1.0,
         on_status: Callable[[str, float], None] | None = None) -> str:
    """The run's status once it has finished, or its current one when `timeout` runs out."""
    start = time.monotonic()
    last = None
    while True:
        run = instance.get_run_by_id(run_id)
        if run is None:
            raise LaunchError(f"run {run_id} is not in the instance")
        if run.status != last and on_status:
            on_status(run.status.value, time.monotonic() - start)
        last = run.status
        if run.status in FINISHED or time.monotonic() - start >= timeout:
            return run.status.value
        time.sleep(poll)


def outcome(instance: dg.DagsterInstance, run_id: str) -> Outcome:
    """The run's status, the figures its ops reported (their output metadata) and why it failed."""
    run = instance.get_run_by_id(run_id)
    result = Outcome(run.status.value if run else "UNKNOWN")
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_OUTPUT:
            result.figures.update({k: _plain(v) for k, v in event.step_output_data.metadata.items()})
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            data = event.step_failure_data
            user = data.user_failure_data
            why = (user.description if user and user.description else None) or (data.error.message.strip()
                                                                                 if data.error else "")
            result.errors.append(f"{event.step_key}: {why}")
            if user:
                result.figures.update({k: _plain(v) for k, v in (user.metadata or {}).items()})
        elif event.event_type == dg.DagsterEventType.RUN_FAILURE and not result.errors:
            result.errors.append(record.user_message or event.message or "run failed")
    return result


def _plain(value: Any) -> Any:
    inner = getattr(value, "value", value)
    return json.dumps(inner, default=str) if isinstance(inner, (dict, list)) else inner
