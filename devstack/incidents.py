"""Incidents on purpose: `python -m devstack incident <name>` while `make dev` is up.

The default demo is a healthy platform and every check is green. Each incident brings into the
running stack what a real one would, and the checks it names go red within a minute or two (the
doorbell sensors take the traffic, the automation sensor refreshes the assets and runs their
checks). docs/operations.md ("What to do when") says, for each, what the operator sees and does.

  bounce-storm     verify-email to addresses that do not exist   bounce_rate_below_ses_thresholds
  complaint-burst  password-reset mail its recipients report      complaint_rate_below_ses_thresholds
  leak             a deleted organisation still subscribed, and  no_billing_leaks
                   a company past its grace period without one
  stripe-drift     two subscriptions changed in Stripe with no    drift_repaired
                   event; a full reconcile_billing_job finds them
  poison           Stripe events no handler can read, and an      stripe_events_quarantine_share
                   email request that is not JSON
  all              every one of them

The functions take what they touch as arguments, so tests drive them against their own stack and
instance; `main` wires them to the running `make dev` (its state directory, DuckDB file, local
Stripe, and the Dagster UI's GraphQL API, for the runs the drift incident launches).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from devstack.demo import demo_request

# (job name, run config) -> (run id, succeeded); the drift incident launches runs through it.
Launch = Callable[[str, dict], tuple[str, bool]]


@dataclass(frozen=True)
class Incident:
    name: str
    checks: tuple[str, ...]   # what goes red
    summary: str


INCIDENTS = {i.name: i for i in [
    Incident("bounce-storm", ("bounce_rate_below_ses_thresholds",),
             "verify-email to unverified addresses that do not exist: each one a hard bounce"),
    Incident("complaint-burst", ("complaint_rate_below_ses_thresholds",),
             "password-reset mail nobody asked for: its recipients mark it as spam"),
    Incident("leak", ("no_billing_leaks",),
             "organisation 'defunct' deleted on the platform but still subscribed in Stripe, and company "
             "'umbrella' past its grace period without a subscription"),
    Incident("stripe-drift", ("drift_repaired",),
             "two subscriptions changed in Stripe with no event (one repairable, one the code cannot read); "
             "a full reconcile_billing_job finds both"),
    Incident("poison", ("stripe_events_quarantine_share",),
             "Stripe events whose subscription lacks its customer, and an email request that is not JSON"),
]}
ORDER = ["poison", "bounce-storm", "complaint-burst", "leak", "stripe-drift"]
WINDOW_DAYS = 7   # ses_reputation's window (pipelines/email_delivery/reporting.py)


# --- email -------------------------------------------------------------------------------------

def _count(duckdb_path: str, sql: str) -> int:
    """One count from the tables (0 before the file or the table exists)."""
    from pipelines.query import QueryError, read_only

    try:
        with read_only(duckdb_path, wait_seconds=30) as (conn, _):
            return conn.execute(sql).fetchone()[0]
    except QueryError:
        return 0
    except Exception:  # noqa: BLE001 - no table yet: nothing counted
        return 0


def sent_in_window(duckdb_path: str) -> int:
    """Emails sent over the reputation window, as far as the tables know (0 before any)."""
    return _count(duckdb_path, "SELECT count(*) FROM email_messages WHERE status = 'sent' AND sent_at >= "
                               f"now() - INTERVAL {WINDOW_DAYS} DAY")


def _send_requests(sqs: Any, queue_url: str, bodies: list[str]) -> int:
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start:start + 10])])
    return len(bodies)


def storm_size(sent: int) -> int:
    """Hard bounces that put the rate at ~50%: red until the healthy sends grow fivefold."""
    return max(20, sent)


def burst_size(sent: int) -> int:
    """Complaints that put the rate at ~5%, ten times SES's 0.5%."""
    return max(5, math.ceil(sent * 0.05))


def bounce_storm(sqs: Any, queue_url: str, sent: int, seed: int | None = None) -> str:
    # its own stream: request ids must differ from every other incident's (a reused id is quarantined)
    rng = random.Random(None if seed is None else f"{seed}:bounce-storm")
    n = storm_size(sent)
    bodies = [json.dumps(demo_request(rng, outcome="bounce", kind="verify-email", verified=False)) for _ in range(n)]
    _send_requests(sqs, queue_url, bodies)
    return f"{n} verify-email requests to addresses that hard-bounce (on top of {sent} sent in {WINDOW_DAYS} days)"


def complaint_burst(sqs: Any, queue_url: str, sent: int, seed: int | None = None) -> str:
    rng = random.Random(None if seed is None else f"{seed}:complaint-burst")
    n = burst_size(sent)
    bodies = [json.dumps(demo_request(rng, outcome="complaint", kind="password-reset")) for _ in range(n)]
    _send_requests(sqs, queue_url, bodies)
    return f"{n} password-reset requests to recipients who complain (on top of {sent} sent in {WINDOW_DAYS} days)"


# --- billing -----------------------------------------------------------------------------------

def leak(environ: Mapping[str, str]) -> str:
    from devstack.demo_billing import LEAKING_ORGS, fill

    subscriptions = fill(dict(environ), orgs=LEAKING_ORGS, reporter="devstack.incidents")
    return (f"organisations {', '.join(o[0] for o in LEAKING_ORGS)} loaded; subscription(s) in the local Stripe: "
            f"{subscriptions}")


def _control(stripe_base: str, path: str, body: dict | None = None) -> Any:
    req = urllib.request.Request(f"{stripe_base.rstrip('/')}/_control/{path}", method="POST" if body is not None else "GET",
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


# A status Stripe does not have: Stripe adds statuses over time (`paused` came in 2023), and an
# object carrying one this code does not know cannot be written; reconciliation leaves it unrepaired.
UNKNOWN_STATUS = "suspended"


def drift_targets(stripe_base: str) -> tuple[dict, dict]:
    """Two live subscriptions of the default demo's paying organisations (by organisation id)."""
    from devstack.demo_billing import ORGS

    paying = {o[0] for o in ORGS if o[5] is not None}
    subs = [s for s in _control(stripe_base, "state/subscription")["data"]
            if s["status"] in ("active", "trialing", "past_due") and s["metadata"].get("organization_id") in paying]
    if len(subs) < 2:
        raise RuntimeError(f"the drift incident needs two live subscriptions in the local Stripe; found {len(subs)} "
                           "(is the demo billing set loaded? DEVSTACK_DEMO_INTERVAL=0 skips it)")
    subs.sort(key=lambda s: s["metadata"]["organization_id"])
    return subs[0], subs[1]


def stripe_drift(stripe_base: str, launch: Launch | None) -> str:
    repairable, unreadable = drift_targets(stripe_base)
    # Changes made in Stripe whose events never arrive: the local Stripe's silent edit.
    _control(stripe_base, f"objects/{repairable['id']}", {"cancel_at_period_end": True})
    _control(stripe_base, f"objects/{unreadable['id']}", {"status": UNKNOWN_STATUS})
    line = (f"in Stripe, with no event: {repairable['id']} ({repairable['metadata']['organization_id']}) set to "
            f"cancel at period end; {unreadable['id']} ({unreadable['metadata']['organization_id']}) given status "
            f"{UNKNOWN_STATUS!r}")
    if launch is None:
        return line + "; run reconcile_billing_job with mode=full, then billing_reports_job"
    run_id, ok = launch("reconcile_billing_job", {"ops": {"reconcile_billing": {"config": {"mode": "full"}}}})
    line += f"; reconcile_billing_job (full) run {run_id} {'succeeded' if ok else 'FAILED'}"
    run_id, ok = launch("billing_reports_job", {})
    return line + f"; billing_reports_job run {run_id} {'succeeded' if ok else 'FAILED'}"


def poison_events(source_id: str, count: int, api_version: str) -> list[str]:
    """EventBridge envelopes from the accepted source whose events no handler can project."""
    from devstack.local_stripe.delivery import DeliveryConfig, eventbridge_body

    config = DeliveryConfig(source_id=source_id)
    now = int(time.time())
    bodies = []
    for _ in range(count):
        sub_id = f"sub_poison{uuid.uuid4().hex[:16]}"
        event = {"id": f"evt_poison{uuid.uuid4().hex[:16]}", "object": "event", "api_version": api_version,
                 "created": now, "livemode": False, "type": "customer.subscription.updated", "pending_webhooks": 1,
                 "request": {"id": None, "idempotency_key": None},
                 "data": {"object": {"id": sub_id, "object": "subscription", "status": "active", "customer": None,
                                     "metadata": {}, "items": {"object": "list", "data": []}}}}
        bodies.append(eventbridge_body(config, event["type"], now, json.dumps(event)))
    return bodies


def stripe_events_in_day(duckdb_path: str) -> int:
    return _count(duckdb_path, "SELECT count(*) FROM stripe_events WHERE received_at > now() - INTERVAL 24 HOUR")


def poison(sqs: Any, stripe_queue_url: str, email_queue_url: str, source_id: str, events: int) -> str:
    from resources.stripe_client import STRIPE_API_VERSION

    n = max(3, math.ceil(events * 0.05))   # 5% of the day's events: the check fails above 1%
    _send_requests(sqs, stripe_queue_url, poison_events(source_id, n, STRIPE_API_VERSION))
    _send_requests(sqs, email_queue_url, ["this is not an email request"])
    return (f"{n} Stripe events that cannot be projected on stripe-events (beside {events} in the last day), and "
            "one email request that is not JSON on email-requests")


# --- running against `make dev` ----------------------------------------------------------------

def graphql_launcher(ui_url: str, timeout: float = 600.0) -> Launch:
    """Launches a job on the instance behind the Dagster UI and waits for its end."""
    from urllib.parse import urlparse

    import dagster as dg
    from dagster_graphql import DagsterGraphQLClient

    url = urlparse(ui_url)
    client = DagsterGraphQLClient(url.hostname or "127.0.0.1", port_number=url.port)
    finished = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}

    def launch(job: str, run_config: dict) -> tuple[str, bool]:
        run_id = client.submit_job_execution(job, repository_location_name="mailroom", run_config=run_config)
        print(f"  launched {job}: {ui_url.rstrip('/')}/runs/{run_id}", flush=True)
        deadline = time.monotonic() + timeout
        status = client.get_run_status(run_id)
        while status not in finished and time.monotonic() < deadline:
            time.sleep(2)
            status = client.get_run_status(run_id)
        return run_id, status == dg.DagsterRunStatus.SUCCESS
    return launch


def run(names: list[str], state: Any, environ: Mapping[str, str], launch: Launch | None,
        seed: int | None = None) -> list[str]:
    """Runs the incidents in order against a stack (StackState) with the code location's
    environment; returns one line per incident."""
    from devstack.stack import STRIPE_SOURCE_ID, aws_client

    sqs = aws_client(state.endpoint, "sqs")
    db = environ["DUCKDB_PATH"]
    email_q, stripe_q = state.queue_urls["email-requests"], state.queue_urls["stripe-events"]
    lines = []
    for name in names:
        if name == "bounce-storm":
            done = bounce_storm(sqs, email_q, sent_in_window(db), seed)
        elif name == "complaint-burst":
            done = complaint_burst(sqs, email_q, sent_in_window(db), seed)
        elif name == "leak":
            done = leak(environ)
        elif name == "stripe-drift":
            done = stripe_drift(state.stripe_base, launch)
        elif name == "poison":
            done = poison(sqs, stripe_q, email_q, STRIPE_SOURCE_ID, stripe_events_in_day(db))
        else:
            raise ValueError(f"unknown incident {name!r}; one of {', '.join(ORDER)}, all")
        lines.append(f"{name}: {done}. Red soon: {', '.join(INCIDENTS[name].checks)}")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack incident", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("incident", choices=[*ORDER, "all"])
    parser.add_argument("--ui", default=f"http://127.0.0.1:{os.environ.get('DEVSTACK_DAGSTER_PORT', '3000')}",
                        help="the Dagster UI of `make dev` (runs are launched through its GraphQL API)")
    args = parser.parse_args(argv)

    from devstack.env import dev_env
    from devstack.stack import is_running
    from devstack.state import StackState, state_dir_from_env

    state = StackState.load(state_dir_from_env())
    if state is None or not is_running(state):
        print("no local stack is running: start `make dev` first", file=sys.stderr)
        return 1
    environ = {**os.environ, **dev_env(state, os.environ)}
    if os.environ.get("DEVSTACK_DAGSTER_HOME"):
        environ["DAGSTER_HOME"] = os.environ["DEVSTACK_DAGSTER_HOME"]
    names = ORDER if args.incident == "all" else [args.incident]
    launch = graphql_launcher(args.ui) if "stripe-drift" in names else None
    print(f"incident at {datetime.now(UTC):%H:%M:%S} UTC", flush=True)
    for name in names:
        for line in run([name], state, environ, launch):
            print(line, flush=True)
    print(f"The checks: {args.ui}/assets (each asset's Checks tab). What to do: docs/operations.md, "
          "'What to do when'. Mail sent: " + state.mail_url)
    return 0
