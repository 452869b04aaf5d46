"""`python -m pipelines.ops`: arguments checked before anything is launched; runs launched on the
instance end as the job ends, with the run id, its link and the job's figures printed."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import pytest

from devstack.state import REPO_ROOT
from pipelines.billing import customers
from pipelines.billing.jobs import (cancel_subscription_job, reconcile_billing_job, refund_payment_job,
                                    resync_customer_job, seat_sync_job)
from pipelines.common.factory import queue_consumer_defs
from pipelines.email_delivery.jobs import SES_NOTIFICATIONS
from pipelines.billing.jobs import STRIPE_EVENTS
from pipelines.ops.commands import COMMANDS, ConfigProblem
from pipelines.store_resource import MailroomStore
from resources.stripe_client import StripeResource
from tests.billing.billing_ops_helpers import stripe_resource

pytestmark = pytest.mark.long   # runs through a real daemon

BAD = [
    ("refund", {"payment_id": "sub_123"}, refund_payment_job, "payment_id: 'sub_123' is not a Stripe payment id"),
    ("refund", {"payment_id": "pi_123", "amount": -5}, refund_payment_job, "amount: must be a positive number"),
    ("refund", {"payment_id": "pi_123", "reason": "oops"}, refund_payment_job, "reason: 'oops' is not duplicate"),
    ("cancel-subscription", {"subscription_id": "cus_1"}, cancel_subscription_job,
     "subscription_id: 'cus_1' is not a Stripe subscription id"),
    ("resync-customer", {"customer_id": "org-1"}, resync_customer_job,
     "customer_id: 'org-1' is not a Stripe customer id"),
    ("reconcile", {"mode": "sideways"}, reconcile_billing_job, "mode: 'sideways' is not incremental or full"),
]


@pytest.mark.parametrize("command,arguments,job,message", BAD)
def test_the_command_refuses_what_the_job_refuses_with_the_same_words(command, arguments, job, message, tmp_path):
    with pytest.raises(ConfigProblem, match=re.escape(message)):
        COMMANDS[command].run_config(**arguments)
    [op] = job.graph.node_defs
    unreachable = StripeResource(api_key="sk_test_x", webhook_secret="whsec_x", api_base="http://127.0.0.1:9")
    result = job.execute_in_process(run_config={"ops": {op.name: {"config": arguments}}}, raise_on_error=False,
                                    resources={"stripe": unreachable,
                                               "store": MailroomStore(duckdb_path=str(tmp_path / "x.duckdb"))})
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert message in failure.event_specific_data.user_failure_data.description


JOBS = {j.name: j for j in [cancel_subscription_job, reconcile_billing_job, refund_payment_job, resync_customer_job,
                            seat_sync_job, *queue_consumer_defs(SES_NOTIFICATIONS).jobs,
                            *queue_consumer_defs(STRIPE_EVENTS).jobs]}


@pytest.mark.parametrize("command,arguments", [
    ("reconcile", {}), ("reconcile", {"mode": "full"}), ("resync-customer", {"customer_id": "cus_1"}),
    ("refund", {"payment_id": "ch_1", "amount": 500, "reason": "duplicate"}), ("refund", {"payment_id": "pi_1"}),
    ("cancel-subscription", {"subscription_id": "sub_1", "at_period_end": True}), ("seat-sync", {}),
    ("replay-ses", {"limit": 10}), ("replay-stripe", {}),
])
def test_every_command_builds_a_run_config_its_job_accepts(command, arguments):
    spec = COMMANDS[command]
    validated = dg.validate_run_config(JOBS[spec.job], spec.run_config(**arguments))
    for name, value in arguments.items():
        [op_config] = [o["config"] for o in validated["ops"].values()]
        assert op_config[name] == value


def test_every_operator_job_has_a_command():
    operator_jobs = {"reconcile_billing_job", "resync_customer_job", "refund_payment_job", "cancel_subscription_job",
                     "seat_sync_job", "replay_ses_quarantine_job", "replay_stripe_quarantine_job"}
    assert {c.job for c in COMMANDS.values()} == operator_jobs


def _ops(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.ops", *args], cwd=REPO_ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


class Listener:
    """A socket that records every connection: a Stripe API base nothing may call."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


def test_refund_with_a_wrong_id_fails_before_any_run_or_stripe_call(stack_env, monkeypatch):
    trap = Listener()
    monkeypatch.setenv("STRIPE_API_BASE", trap.url)
    result = _ops("refund", "cus_123", "--wait")
    assert result.returncode == 2
    assert result.stderr.strip() == ("refund: payment_id: 'cus_123' is not a Stripe payment id (expected pi_ or "
                                     "ch_...); nothing was launched")
    assert result.stdout == ""
    with dg.DagsterInstance.from_config(stack_env["DAGSTER_HOME"]) as instance:
        assert instance.get_runs() == []
    assert trap.connections == 0
    trap.sock.close()


@pytest.fixture
def daemon(stack_env):
    """The instance's daemon, which starts queued runs (as under `make dev`)."""
    # Create the instance's storage first: two processes creating a fresh SQLite storage at once
    # (the daemon and the command's code server) can leave it with two schema heads.
    with dg.DagsterInstance.from_config(stack_env["DAGSTER_HOME"]):
        pass
    log = open(Path(stack_env["DAGSTER_HOME"]) / "daemon.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                            cwd=REPO_ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    yield proc
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


def _launched(result: subprocess.CompletedProcess, job: str) -> str:
    m = re.search(rf"^{job}: run ([0-9a-f-]{{36}})\n  http://127\.0\.0\.1:3000/runs/\1$", result.stdout, re.M)
    assert m, result.stdout + result.stderr
    return m.group(1)


def test_reconcile_and_resync_print_their_run_and_end_in_success(stack_env, local_stack, daemon):
    result = _ops("reconcile", "--wait", "--timeout", "240")
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = _launched(result, "reconcile_billing_job")
    assert "\nreconcile_billing_job: success\n" in result.stdout
    assert re.search(r"^  stripe_calls: \d+$", result.stdout, re.M)
    assert re.search(r"^  unrepaired: 0$", result.stdout, re.M)

    local_stack.stripe_control("reset")
    client = stripe_resource(local_stack).client()
    customer = customers.create_customer(client, organization_id="org-cli", name="org-cli",
                                         email="billing@org-cli.example")
    result = _ops("resync-customer", customer["id"], "--wait", "--timeout", "240")
    assert result.returncode == 0, result.stdout + result.stderr
    resync_id = _launched(result, "resync_customer_job")
    assert resync_id != run_id
    assert "\nresync_customer_job: success\n" in result.stdout
    assert re.search(r"^  objects_checked: [1-9]\d*$", result.stdout, re.M), result.stdout
    with dg.DagsterInstance.from_config(stack_env["DAGSTER_HOME"]) as instance:
        runs = {r.run_id: r for r in instance.get_runs()}
    assert runs[run_id].status == runs[resync_id].status == dg.DagsterRunStatus.SUCCESS
    assert runs[resync_id].run_config == {"ops": {"resync_customer": {"config": {"customer_id": customer["id"]}}}}
