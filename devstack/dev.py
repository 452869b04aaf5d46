"""`make dev`: the local stack, `dagster dev` on 127.0.0.1:3000 and demo traffic; Ctrl-C stops all.

A stack that was already up (`python -m devstack up`) is used and left running; one started
here is stopped on exit. EMAIL_TRANSPORT defaults to `ses` here (moto SES + the mailbox
simulator), so demo emails come back as deliveries, bounces and complaints; set
EMAIL_TRANSPORT=smtp to send to the SMTP sink instead.

Demo traffic (off with DEVSTACK_DEMO_INTERVAL=0): a few email requests every few seconds and, once,
the demo billing set (organisations, and their customers and subscriptions in the local Stripe).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from devstack.demo import DemoTraffic
from devstack.progress import Counter, Step
from devstack.env import check_env, dev_env
from devstack.stack import StackError, aws_client, claim_port, config_from_env, down, up
from devstack.state import REPO_ROOT


def _wait_for_ui(port: int, proc: subprocess.Popen, timeout: float = 180.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _die_with_parent() -> None:
    """In the child before exec: on Linux, get SIGINT when `devstack dev` dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: Ctrl-C and SIGTERM still stop it through run_dev's finally


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cancel_runs(dagster_home: str, reason: str = "make dev stopped (Ctrl-C)") -> int:
    """Ask every unfinished run to stop, as Terminate in the UI does: runs whose worker is not yet
    running the plan (queued, or STARTING: the worker is still loading code) are canceled at once,
    and the worker, once up, does not start; running ones are marked CANCELING, so the interrupt
    that follows ends them as canceled (a drain first stops cleanly, pipelines/common/stop.py)
    instead of failed. (A STARTING run marked CANCELING would be failed by its worker, which then
    finds it in a state it did not expect.)"""
    import dagster as dg

    active = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]
    with dg.DagsterInstance.from_config(dagster_home) as instance:
        runs = instance.get_runs(dg.RunsFilter(statuses=active))
        for run in runs:
            if run.status in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
                              dg.DagsterRunStatus.STARTING):
                instance.report_run_canceled(run, message=reason)
            else:
                instance.report_run_canceling(run, message=reason)
    return len(runs)


def _stop_dagster(proc: subprocess.Popen) -> None:
    """dagster dev, then whatever it left in its process group (run workers), before the stack goes."""
    pgid = proc.pid  # start_new_session: the group is dagster dev's own
    if proc.poll() is None:
        # dagster dev shuts its webserver, daemon and code server down through its shutdown
        # pipes on SIGINT; signalling the whole group at once leaves it waiting.
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    # Run workers the daemon launched are not stopped by dagster dev; a terminal's Ctrl-C would
    # reach them as members of the foreground group, so do the same, then insist.
    for sig, wait in ((signal.SIGINT, 15.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if not _group_alive(pgid):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(pgid):
            if proc.poll() is None:
                try:
                    proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.2)
    if proc.poll() is None:
        proc.wait()


def _seed_billing(env: dict[str, str], outcome: dict[str, str], ui_ready: threading.Event) -> None:
    """Demo organisations and their Stripe subscriptions (devstack/demo_billing.py), so the billing
    drain, assets and checks have something to show; the result is one line for the terminal. The
    input tables are reported to Dagster once `dagster dev` is up: two processes creating a fresh
    instance's SQLite storage at once can leave it with two schema heads."""
    from devstack.demo_billing import ORGS, fill

    try:
        subscriptions = fill(env, before_report=ui_ready.wait)
    except Exception as exc:  # noqa: BLE001 - the email half still runs; the line says what failed
        outcome["line"] = f"demo billing could not be filled: {type(exc).__name__}: {exc}"
    else:
        outcome["line"] = (f"demo billing: {len(ORGS)} organisations, {len(subscriptions)} subscriptions "
                           f"in the local Stripe (its events go to stripe-events)")


def run_dev() -> int:
    config = config_from_env(watch_pid=os.getpid())
    raw_port = os.environ.get("DEVSTACK_DAGSTER_PORT", "3000")
    if not raw_port.isdigit():
        raise StackError(f"DEVSTACK_DAGSTER_PORT must be a port number (0 picks a free port); got {raw_port!r}")
    dagster_port = claim_port(int(raw_port), "DEVSTACK_DAGSTER_PORT")
    with Step("starting the local stack (moto, SMTP sink, mailbox simulator)", stream=sys.stdout):
        state, already = up(config)
    print(f"local stack {'already running' if already else f'started in {state.startup_seconds:.2f}s'}: "
          f"moto {state.endpoint}, SMTP sink 127.0.0.1:{state.smtp_port}, local Stripe {state.stripe_base}",
          flush=True)

    env = {**os.environ, **dev_env(state, os.environ)}
    if os.environ.get("DEVSTACK_DAGSTER_HOME"):
        env["DAGSTER_HOME"] = os.environ["DEVSTACK_DAGSTER_HOME"]
    problems = check_env(env)
    if problems:
        if not already:
            down(config.state_dir)
        raise StackError("environment is not usable:\n  " + "\n  ".join(problems))
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    # Every table exists, empty, before Dagster starts: ad-hoc readers never meet a missing one.
    from pipelines.schema import create as create_schema

    create_schema(env["DUCKDB_PATH"])

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # A shell starting us in the background sets SIGINT to "ignore"; set it before spawning
    # dagster, which would inherit the "ignore" and never hear Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    dagster = Path(sys.executable).parent / "dagster"
    # dagster dev's own output (webserver, daemon, every run's events) goes to a log file, so the
    # terminal keeps the few lines that matter, the UI's address last.
    log_path = Path(config.state_dir) / "dagster.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(dagster_port)],
        cwd=REPO_ROOT, env=env, start_new_session=True, preexec_fn=_die_with_parent,
        stdout=log, stderr=subprocess.STDOUT,
    )
    interval = float(os.environ.get("DEVSTACK_DEMO_INTERVAL", "5"))
    demo = None
    billing: dict[str, str] = {}
    ui_ready = threading.Event()
    stopping = False
    counter = Counter()

    try:
        # Demo traffic starts with dagster dev, not after it: the sensors' first ticks then find work.
        if interval > 0:
            demo = DemoTraffic(aws_client(state.endpoint, "sqs"), state.queue_urls["email-requests"],
                               interval=interval)
            demo.start()
            threading.Thread(target=_seed_billing, args=(env, billing, ui_ready), name="demo-billing",
                             daemon=True).start()
        with Step("starting dagster dev (webserver, daemon, code location)", stream=sys.stdout):
            ready = _wait_for_ui(dagster_port, proc)
        if not ready:
            print(f"dagster dev did not come up; the end of {log_path}:\n{_tail(log_path)}", flush=True)
            return proc.wait() or 1
        ui_ready.set()
        print(f"dagster dev log: {log_path}  (runs, sensors: in the UI)", flush=True)
        if demo:
            print(f"demo traffic: a few email requests every {interval:g}s on email-requests", flush=True)
        print(f"mail viewer at {state.mail_url}  (every email sent; incidents: python -m devstack incident)",
              flush=True)
        print(f"UI at http://127.0.0.1:{dagster_port}  (Ctrl-C stops everything)", flush=True)
        while proc.poll() is None:
            if billing.get("line"):
                counter.end()
                print(billing.pop("line"), flush=True)
            if demo:
                counter.show(f"  demo traffic: {demo.sent} requests sent")
            time.sleep(1.0)
        return proc.returncode
    except KeyboardInterrupt:
        stopping = True
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish cleaning up
        counter.end()
        if stopping:
            print("\nstopping ...", flush=True)
        if demo:
            demo.stop()
        try:
            canceled = cancel_runs(env["DAGSTER_HOME"])
        except Exception as exc:  # noqa: BLE001 - stopping goes on; the runs then end as failed
            print(f"could not cancel the unfinished runs: {type(exc).__name__}: {exc}", flush=True)
        else:
            if canceled:
                print(f"canceling {canceled} unfinished run(s) ...", flush=True)
        _stop_dagster(proc)
        log.close()
        if not already:
            down(config.state_dir)
            print("local stack stopped", flush=True)
