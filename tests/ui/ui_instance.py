"""A Dagster instance with real history for the browser test, and the webserver that shows it.

`populate(env, stack)` runs the code location's own jobs in process against the local stack:
demo email requests (plus one that is not JSON, so the drain quarantines something) through
send_email_batch_job, the mailbox simulator's signed notifications through
ingest_ses_notifications_job, the demo billing set (devstack/demo_billing.py: organisations, their
customers and subscriptions in the local Stripe) through ingest_stripe_events_job, then every
asset of the Definitions is materialized (its checks run with it). That is `make dev`'s default
demo, a healthy platform: every check passes. `drain_all` and `materialize_all` run the same
drains and assets again after an incident (devstack/incidents.py). `Webserver` is `dagster-webserver -w workspace.yaml` on a free port against that
instance's DAGSTER_HOME.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from devstack.demo import demo_request
from tests.paths import REPO_ROOT

POISON = "this is not an email request"


@dataclass
class History:
    """What populate() ran: run ids by job, the drain outputs, asset keys materialized."""
    runs: dict[str, list[str]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    materialized: list[str] = field(default_factory=list)


def _run(defs: dg.Definitions, instance: dg.DagsterInstance, job: str, op: str, history: History,
         run_config: dict | None = None) -> dict[str, Any]:
    result = defs.resolve_job_def(job).execute_in_process(instance=instance, run_config=run_config or {})
    assert result.success, f"{job} failed"
    history.runs.setdefault(job, []).append(result.run_id)
    output = result.output_for_node(op)
    history.outputs[job] = output
    return output


def populate(stack: Any, instance: dg.DagsterInstance, requests: int = 12, seed: int = 12) -> History:
    from pipelines.definitions import defs

    history = History()
    rng = random.Random(seed)
    sqs, url = stack.client("sqs"), stack.queue_urls["email-requests"]
    bodies = [json.dumps(demo_request(rng)) for _ in range(requests)] + [POISON]
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start:start + 10])])

    sent = _run(defs, instance, "send_email_batch_job", "send_email_batch", history,
                {"ops": {"send_email_batch": {"config": {"wait_seconds": 1, "max_seconds": 30}}}})
    assert sent.get("quarantined") == 1, sent

    ingest_ses(defs, instance, history, sent["sent"])

    # The demo billing set, as `make dev` loads it; the local Stripe delivers its events to stripe-events.
    from devstack.demo_billing import fill

    stack.stripe_control("reset")
    stack.stripe_control("faults")
    fill(dict(os.environ))
    drain_stripe(defs, instance, history, stack)

    # Every asset the drain runs did not already materialize (ledgers a drain op declares are).
    graph = defs.resolve_asset_graph()
    keys = [k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable
            and instance.get_latest_materialization_event(k) is None]
    history.runs.setdefault("__ASSET_JOB", []).append(materialize(defs, instance, keys))
    history.materialized = [k.to_user_string() for k in keys]
    return history


def ingest_ses(defs: dg.Definitions, instance: dg.DagsterInstance, history: History, sends: int) -> int:
    """Drains ses-notifications until a notification per send is applied (the mailbox simulator
    answers each send with one or two within ~1 s)."""
    ingest = {"ops": {"drain_ses_notifications": {"config": {"wait_seconds": 1, "max_seconds": 5,
                                                             "verify_workers": 0}}}}
    applied = 0
    deadline = time.monotonic() + 60
    while applied < sends and time.monotonic() < deadline:
        applied += _run(defs, instance, "ingest_ses_notifications_job", "drain_ses_notifications", history,
                        ingest).get("events_new", 0)
    assert applied >= sends, f"only {applied} notifications applied for {sends} sends"
    return applied


def drain_stripe(defs: dg.Definitions, instance: dg.DagsterInstance, history: History, stack: Any) -> int:
    """Waits for the local Stripe's deliveries, then drains stripe-events until it is empty."""
    stack.stripe_control("flush", timeout=30)
    config = {"ops": {"drain_stripe_events": {"config": {"wait_seconds": 1, "max_seconds": 10}}}}
    received = 0
    while True:
        got = _run(defs, instance, "ingest_stripe_events_job", "drain_stripe_events", history, config)["received"]
        received += got
        if not got:
            return received


def materialize(defs: dg.Definitions, instance: dg.DagsterInstance, keys: list[dg.AssetKey] | None = None) -> str:
    """Materializes the assets (every materializable one by default) and runs every check, the
    ledgers' checks included (as the automation sensor does under `make dev`)."""
    graph = defs.resolve_asset_graph()
    keys = keys if keys is not None else [k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable]
    job = defs.resolve_implicit_global_asset_job_def()
    checks = set(job.asset_layer.asset_graph.asset_check_keys)
    result = job.get_subset(asset_selection=set(keys), asset_check_selection=checks).execute_in_process(
        instance=instance)
    assert result.success, "materializing the assets failed"
    return result.run_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Webserver:
    """`dagster-webserver` for the project's workspace.yaml, on 127.0.0.1 and a free port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        webserver = Path(sys.executable).parent / "dagster-webserver"
        self.proc = subprocess.Popen(
            [str(webserver), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=REPO_ROOT, env={**env, "PYTHONPATH": str(REPO_ROOT)}, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until the code location is loaded (a GraphQL query answers with its repository)."""
        query = json.dumps({"query": "{ workspaceOrError { ... on Workspace { locationEntries { name "
                                     "locationOrLoadError { __typename } } } } }"}).encode()
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagster-webserver exited ({self.proc.returncode}); log: {self.log_path}")
            try:
                req = urllib.request.Request(f"{self.url}/graphql", data=query,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=5) as r:
                    last = r.read().decode()
                entries = json.loads(last)["data"]["workspaceOrError"]["locationEntries"]
                kinds = {e["name"]: (e["locationOrLoadError"] or {}).get("__typename") for e in entries}
                if kinds.get("mailroom") == "RepositoryLocation":
                    return
                if kinds.get("mailroom") == "PythonError":
                    raise RuntimeError(f"the code location failed to load: {last}")
            except (OSError, ValueError, KeyError, TypeError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"dagster-webserver not ready after {timeout:.0f}s (last answer {last[:300]!r}); "
                           f"log: {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()
