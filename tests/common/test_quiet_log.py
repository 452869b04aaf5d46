"""The log speaks only when it matters: `make dev` repeats no warning, an operator's stop is logged
as a WARNING without a stack trace, a real error is still an ERROR with its traceback."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
import yaml

from devstack.stack import down
from devstack.state import REPO_ROOT
from pipelines.email.dispatch import dispatch

pytestmark = pytest.mark.long   # a 60 s make dev warm-up

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PYTHON_WARNING = re.compile(r"^\S+:\d+: (\w*Warning): (.*)$")
# 2026-12-05 01:15:03 +0000 - dagster - WARNING - <job> - <run id> - <pid> - ...
DAGSTER_WARNING = re.compile(r"^\S+ \S+ \S+ - (\S+) - WARNING - (.*)$")
RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def warnings_in(log: str) -> Counter:
    """Each warning the log holds, Python's (category: message) and logged ones (logger - message,
    run ids and pids left out), with how often it appears."""
    seen: Counter = Counter()
    for line in ANSI.sub("", log).splitlines():
        if m := PYTHON_WARNING.match(line):
            seen[f"{m.group(1)}: {m.group(2)}"] += 1
        elif m := DAGSTER_WARNING.match(line):
            text = re.sub(r" - \d+ - ", " - ", RUN_ID.sub("<run>", m.group(2)))
            seen[f"{m.group(1)} WARNING {text}"] += 1
    return seen


def test_warnings_in_counts_python_and_logged_warnings():
    log = ("/x/sensor_definition.py:809: BetaWarning: Parameter `owners` is beta\n"
           "/x/sensor_definition.py:809: BetaWarning: Parameter `owners` is beta\n"
           "\x1b[32m2026-12-05 01:13:08 +0000\x1b[0m - dagster - \x1b[34mINFO\x1b[0m - Launching\n"
           "2026-12-05 01:15:03 +0000 - dagster - WARNING - job - 402551e1-eefd-49aa-8809-4d17048b125a - 866 - "
           "RUN_CANCELED - canceled.\n"
           "\x1b[32m2026-12-05 01:15:09 +0000\x1b[0m - dagster.daemon - \x1b[33mWARNING\x1b[0m - tick slow\n")
    assert warnings_in(log) == Counter({"BetaWarning: Parameter `owners` is beta": 2,
                                        "dagster WARNING job - <run> - RUN_CANCELED - canceled.": 1,
                                        "dagster.daemon WARNING tick slow": 1})


@pytest.mark.integration
def test_make_dev_writes_no_warning_twice_during_a_60_second_warm_up(tmp_path):
    import shutil

    from devstack.env import DAGSTER_HOME

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DAGSTER_HOME / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTACK_") and k != "EMAIL_TRANSPORT"}
    env.update(DEVSTACK_STATE_DIR=str(tmp_path / "st"), DEVSTACK_MOTO_PORT="0", DEVSTACK_SMTP_PORT="0",
               DEVSTACK_STRIPE_PORT="0", DEVSTACK_MAIL_PORT="0", DEVSTACK_DAGSTER_PORT="0", DEVSTACK_DAGSTER_HOME=str(home))
    proc = subprocess.Popen([sys.executable, "-m", "devstack", "dev"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log_path = tmp_path / "st" / "dagster.log"
    try:
        deadline = time.monotonic() + 180
        line = ""
        while not line.startswith("UI at ") and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "devstack dev exited early"
        assert line.startswith("UI at "), "the UI did not come up within 180 s"
        time.sleep(60)
        warm_up = log_path.read_text(errors="replace")   # before the stop's own lines
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        down(tmp_path / "st")
    assert "RUN_START" in warm_up, "no run started during the warm-up: nothing was tested"
    repeated = {w: n for w, n in warnings_in(warm_up).items() if n > 1}
    assert repeated == {}


# --- a stop, and a real error, as the run's log shows them --------------------------------------

def _execute(job: str, config: dict, env: dict[str, str]) -> subprocess.Popen:
    path = Path(env["DAGSTER_HOME"]) / f"{job}.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.Popen([sys.executable, "-m", "dagster", "job", "execute", "-m", "pipelines.definitions",
                             "-j", job, "-c", str(path)], cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _levels(instance: dg.DagsterInstance, run_id: str) -> dict[str, int]:
    """The highest level each event type (or plain message) of the run was stored at."""
    levels: dict[str, int] = {}
    for record in instance.all_logs(run_id):
        key = record.dagster_event.event_type_value if record.dagster_event else record.user_message
        levels[key] = max(levels.get(key, 0), record.level)
    return levels


def test_a_stopped_run_is_logged_as_a_warning_without_a_stack_trace(local_stack, stack_env):
    for i in range(40):
        dispatch("password-change", [{"email": f"quiet{i}@example.org", "verified": True}],
                 {"username": f"user{i}"}, request_id=f"quiet-{i}")
    proc = _execute("send_email_batch_job", {
        "execution": {"config": {"multiprocess": {}}},
        "ops": {"send_email_batch": {"config": {"max_send_rate": 2.0, "batch_size": 20, "inflight_window": 5}}}},
        stack_env)
    try:
        deadline = time.monotonic() + 120
        while local_stack.smtp.count() < 3:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no sends in time"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    instance = dg.DagsterInstance.get()
    [run] = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.CANCELED, out[-3000:]
    levels = _levels(instance, run.run_id)
    assert levels["PIPELINE_CANCELED"] == logging.WARNING
    errors = {k: v for k, v in levels.items() if v >= logging.ERROR}
    assert errors == {}, out[-3000:]
    [canceled] = [r for r in instance.all_logs(run.run_id)
                  if r.dagster_event and r.dagster_event.event_type == dg.DagsterEventType.RUN_CANCELED]
    assert canceled.dagster_event.event_specific_data.error is None
    for failure in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        assert failure.dagster_event.event_specific_data.error.stack == []   # the stop's, as a warning
    assert " - ERROR - " not in out and "Traceback" not in out and "Stack Trace" not in out, out[-3000:]
    assert re.search(r" - WARNING - send_email_batch_job - \S+ - \d+ - RUN_CANCELED - ", out), out[-3000:]


def test_a_real_error_is_still_an_error_with_its_traceback(stack_env, monkeypatch):
    # reconcile_billing_job against a Stripe that is not there: the op's exception, not a stop.
    monkeypatch.setenv("STRIPE_API_BASE", "http://127.0.0.1:9")
    proc = _execute("reconcile_billing_job", {"execution": {"config": {"multiprocess": {}}}}, stack_env)
    out, _ = proc.communicate(timeout=240)
    instance = dg.DagsterInstance.get()
    [run] = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.FAILURE, out[-3000:]
    levels = _levels(instance, run.run_id)
    assert levels["STEP_FAILURE"] == levels["PIPELINE_FAILURE"] == logging.ERROR
    # The step's own console lines come through Dagster's compute-log mirror, which can drop the
    # last lines of a step process on a busy machine; the run's stored log is the record.
    [failure] = [r for r in instance.all_logs(run.run_id)
                 if r.dagster_event and r.dagster_event.event_type_value == "STEP_FAILURE"]
    assert failure.level == logging.ERROR and failure.step_key == "reconcile_billing"
    error = failure.dagster_event.event_specific_data.error
    assert "APIConnectionError" in str(error.cause or error) and (error.cause or error).stack
    assert "Stack Trace:" in out, out[-3000:]


# --- the filter itself ----------------------------------------------------------------------------

def _record(message: str, event=None) -> logging.LogRecord:
    record = logging.LogRecord("dagster", logging.ERROR, __file__, 1, message, (), None)
    if event is not None:
        record.dagster_event = event
    return record


def _error(cls_name: str) -> "SerializableErrorInfo":
    from dagster._utils.error import SerializableErrorInfo

    return SerializableErrorInfo(message=f"{cls_name}: boom\n", stack=["  File x, line 1\n"], cls_name=cls_name)


@pytest.mark.parametrize("status,lowered", [(dg.DagsterRunStatus.CANCELING, True),
                                            (dg.DagsterRunStatus.STARTED, False)])
def test_quiet_cancel_lowers_only_what_a_requested_stop_causes(tmp_path, status, lowered):
    from dagster._core.events import DagsterEvent, JobCanceledData
    from dagster._core.execution.plan.objects import ErrorSource, StepFailureData

    from pipelines.common.cancel_logging import QuietCancel

    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        instance.add_run(dg.DagsterRun(job_name="j", run_id="r1", status=status))
        quiet = QuietCancel(instance, "r1")

        def step_failure(source, cls_name):
            return DagsterEvent(event_type_value="STEP_FAILURE", job_name="j", step_key="s",
                                event_specific_data=StepFailureData(_error(cls_name), None, source))

        interrupted = _record("step failed", step_failure(ErrorSource.INTERRUPT, "DagsterExecutionInterruptedError"))
        unfinished = _record("Step s finished without success or failure event. Downstream steps will not execute.")
        user_error = _record("step failed", step_failure(ErrorSource.USER_CODE_ERROR, "ValueError"))
        for record in (interrupted, unfinished, user_error):
            assert quiet.filter(record) is True
        expected = logging.WARNING if lowered else logging.ERROR
        assert (interrupted.levelno, unfinished.levelno) == (expected, expected)
        assert (interrupted.dagster_event.event_specific_data.error.stack == []) is lowered
        assert user_error.levelno == logging.ERROR
        assert user_error.dagster_event.event_specific_data.error.stack != []

        # RUN_CANCELED is only logged once the run is canceling: an interrupt is quiet, an exception is not
        canceled = _record("canceled", DagsterEvent(event_type_value="PIPELINE_CANCELED", job_name="j",
                                                    event_specific_data=JobCanceledData(
                                                        _error("DagsterExecutionInterruptedError"))))
        failed_while_canceling = _record("canceled", DagsterEvent(event_type_value="PIPELINE_CANCELED", job_name="j",
                                                                  event_specific_data=JobCanceledData(
                                                                      _error("RuntimeError"))))
        quiet.filter(canceled)
        quiet.filter(failed_while_canceling)
        assert canceled.levelno == logging.WARNING and canceled.dagster_event.event_specific_data.error is None
        assert failed_while_canceling.levelno == logging.ERROR
        assert failed_while_canceling.dagster_event.event_specific_data.error.cls_name == "RuntimeError"
