"""A real SIGTERM against a running send run (`dagster job execute` in a subprocess, sends throttled
to 2/s): the run ends CANCELED, every email the SMTP sink received is recorded as sent, no row is
left pending, and nothing the run did not finish was deleted from the queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import duckdb
import yaml

from pipelines.email.dispatch import dispatch
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.long   # real signals to real runs

ROOT = REPO_ROOT
REQUESTS = 40


def ledger(db_path: str) -> dict[str, int]:
    deadline = time.monotonic() + 10
    while True:
        try:
            with duckdb.connect(db_path, read_only=True) as c:
                return dict(c.execute("SELECT status, count(*) FROM email_messages GROUP BY ALL").fetchall())
        except (duckdb.IOException, duckdb.CatalogException):
            if time.monotonic() > deadline:
                return {}
            time.sleep(0.05)


def queue_depth(local_stack) -> int:
    attrs = local_stack.client("sqs").get_queue_attributes(
        QueueUrl=local_stack.queue_urls["email-requests"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


@pytest.mark.parametrize("executor", ["in_process", "multiprocess"])
def test_sigterm_stops_a_throttled_send_run_cleanly_and_cancels_it(local_stack, stack_env, tmp_path, executor):
    for i in range(REQUESTS):
        dispatch("password-change", [{"email": f"stop{i}@example.org", "verified": True}],
                 {"username": f"user{i}"}, request_id=f"stop-{i}")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "execution": {"config": {executor: {}}},
        "ops": {"send_email_batch": {"config": {"max_send_rate": 2.0, "batch_size": 20, "inflight_window": 5}}}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "job", "execute", "-m", "pipelines.definitions",
         "-j", "send_email_batch_job", "-c", str(config)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while ledger(stack_env["DUCKDB_PATH"]).get("sent", 0) < 3:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no sends recorded in time"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = out.decode()

    instance = dg.DagsterInstance.get()
    runs = instance.get_runs()
    assert len(runs) == 1
    assert runs[0].status == dg.DagsterRunStatus.CANCELED, log[-3000:]
    statuses = ledger(stack_env["DUCKDB_PATH"])
    assert statuses.get("pending", 0) == 0, statuses
    sunk = local_stack.smtp.count()
    assert 3 <= statuses["sent"] == sunk < REQUESTS, (statuses, sunk)
    # The run stopped part-way: messages it did not finish are still on the queue (at least the
    # requests that were never sent), none lost.
    assert queue_depth(local_stack) >= REQUESTS - sunk
    assert "email-requests: stopped (received SIG" in log, log[-3000:]


def test_stopping_make_dev_cancels_unfinished_runs_before_interrupting_them(tmp_path):
    # Ctrl-C on `make dev` marks running runs CANCELING (their interrupt then ends them canceled,
    # as Terminate in the UI does) and cancels runs whose worker has not started the plan (queued or
    # STARTING); finished runs are left alone.
    from devstack.dev import cancel_runs

    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    statuses = {"running": dg.DagsterRunStatus.STARTED, "waiting": dg.DagsterRunStatus.NOT_STARTED,
                "starting": dg.DagsterRunStatus.STARTING, "done": dg.DagsterRunStatus.SUCCESS}
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        for run_id, status in statuses.items():
            instance.add_run(dg.DagsterRun(job_name="send_email_batch_job", run_id=run_id, status=status))
    assert cancel_runs(str(tmp_path)) == 3
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        got = {r.run_id: r.status for r in instance.get_runs()}
    assert got == {"running": dg.DagsterRunStatus.CANCELING, "waiting": dg.DagsterRunStatus.CANCELED,
                   "starting": dg.DagsterRunStatus.CANCELED, "done": dg.DagsterRunStatus.SUCCESS}


def test_a_signal_before_the_drain_starts_ends_the_run_canceled_and_loses_nothing(local_stack, stack_env, tmp_path):
    # SIGTERM reaches the run worker before its step has started (the drain has not installed its
    # own stop yet): the executor marks the run CANCELING, so it ends CANCELED, not FAILED. How much
    # the step did before the forwarded stop reached it is a race; either way nothing is left
    # pending, every email the sink got is recorded as sent, and the rest is still on the queue.
    for i in range(5):
        dispatch("password-change", [{"email": f"early{i}@example.org", "verified": True}],
                 {"username": f"user{i}"}, request_id=f"early-{i}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "job", "execute", "-m", "pipelines.definitions",
         "-j", "send_email_batch_job"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    instance = dg.DagsterInstance.get()
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run never started"
            runs = instance.get_runs()
            if runs and runs[0].status == dg.DagsterRunStatus.STARTED:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        signalled_after = {e.dagster_event.event_type_value for e in instance.all_logs(runs[0].run_id)
                           if e.dagster_event}
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "STEP_START" not in signalled_after, "the signal came too late to test the early window"
    run = instance.get_run_by_id(runs[0].run_id)
    assert run.status == dg.DagsterRunStatus.CANCELED, out.decode()[-3000:]
    statuses = ledger(stack_env["DUCKDB_PATH"])
    assert statuses.get("pending", 0) == 0, statuses
    sunk = local_stack.smtp.count()
    assert statuses.get("sent", 0) == sunk
    assert queue_depth(local_stack) == 5 - sunk
