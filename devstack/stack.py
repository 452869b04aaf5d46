"""Starting, finding and stopping the local stack.

Three processes, all on 127.0.0.1: moto server (SQS, SNS, SES), the services process
(SMTP sink + mailbox simulator + mail viewer, `python -m devstack.services`) and the local Stripe
(`python -m devstack.local_stripe`, delivering its events to the stripe-events queue). Their ports and pids are
in <state>/state.json; `up` on a running stack reports it instead of starting another.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import boto3
from botocore.config import Config

from devstack.sns_signer import load_or_create_signing_identity
from devstack.state import REPO_ROOT, StackState, state_dir_from_env
from devstack.topology import ensure_topology

STRIPE_QUEUE = "stripe-events"
STRIPE_API_KEY = "sk_test_local"
STRIPE_WEBHOOK_SECRET = "whsec_local"
STRIPE_SOURCE_ID = "acct_local"  # EventBridge source aws.partner/stripe.com/<this>

REGION = "us-east-1"
DEFAULT_PORTS = {"DEVSTACK_MOTO_PORT": 4566, "DEVSTACK_SMTP_PORT": 2525, "DEVSTACK_STRIPE_PORT": 12111}
MAIL_VIEWER_PORT = 8025
PROCESS_MARKERS = {"moto_pid": "moto", "services_pid": "devstack.services",
                   "stripe_pid": "devstack.local_stripe"}  # moto: devstack.moto_server


class StackError(RuntimeError):
    pass


class PortInUseError(StackError):
    pass


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path
    moto_port: int  # 0: pick a free port
    smtp_port: int
    duckdb_path: Path
    stripe_port: int = 12111
    signature_version: str = "2"
    watch_pid: int | None = None  # stop the stack when this process dies
    # The mail viewer's port. None: MAIL_VIEWER_PORT when free, else any free port (a convenience,
    # so stacks started side by side never fail on it); a number (DEVSTACK_MAIL_PORT) is claimed
    # like the other ports.
    mail_port: int | None = None


def config_from_env(environ: dict[str, str] | None = None, **overrides: Any) -> StackConfig:
    environ = dict(os.environ if environ is None else environ)
    state_dir = Path(overrides.pop("state_dir", None) or state_dir_from_env(environ)).resolve()
    ports = {}
    for var, default in DEFAULT_PORTS.items():
        raw = environ.get(var, str(default))
        if not raw.isdigit() or int(raw) > 65535:
            raise StackError(f"{var} must be a port number 0-65535 (0 picks a free port); got {raw!r}")
        ports[var] = int(raw)
    version = environ.get("DEVSTACK_SNS_SIGNATURE_VERSION", "2")
    if version not in ("1", "2"):
        raise StackError(f"DEVSTACK_SNS_SIGNATURE_VERSION must be 1 or 2; got {version!r}")
    raw_mail = environ.get("DEVSTACK_MAIL_PORT")
    if raw_mail is not None and (not raw_mail.isdigit() or int(raw_mail) > 65535):
        raise StackError(f"DEVSTACK_MAIL_PORT must be a port number 0-65535 (0 picks a free port); got {raw_mail!r}")
    cfg = dict(
        state_dir=state_dir,
        mail_port=int(raw_mail) if raw_mail is not None else None,
        moto_port=ports["DEVSTACK_MOTO_PORT"],
        smtp_port=ports["DEVSTACK_SMTP_PORT"],
        stripe_port=ports["DEVSTACK_STRIPE_PORT"],
        duckdb_path=Path(environ.get("DEVSTACK_DUCKDB_PATH") or state_dir / "mailroom.duckdb").resolve(),
        signature_version=version,
    )
    cfg.update(overrides)
    return StackConfig(**cfg)


_SESSION: boto3.session.Session | None = None


def aws_client(endpoint: str, service: str, max_pool_connections: int = 10) -> Any:
    global _SESSION
    if _SESSION is None:  # one session: it caches the service models clients are built from
        _SESSION = boto3.session.Session()
    return _SESSION.client(
        service, endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=max_pool_connections),
    )


def client_factory(endpoint: str) -> Callable[[str], Any]:
    return lambda service: aws_client(endpoint, service)


# --- ports -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def claim_port(port: int, variable: str) -> int:
    """port itself if free (a free one for 0); PortInUseError naming port and variable otherwise."""
    if port == 0:
        return free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"port {port} on 127.0.0.1 is already in use; choose another with "
                    f"{variable}=<port> (or {variable}=0 for a free one)") from None
            raise
    return port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --- processes -------------------------------------------------------------------------------

def _ours(pid: int | None, marker: str) -> bool:
    """pid is alive and is the process we started (not a recycled pid)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc (macOS): trust the pid
    return marker in cmdline


def stop_pid(pid: int | None, marker: str, timeout: float = 5.0) -> None:
    if not _ours(pid, marker):
        return
    assert pid is not None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass  # not our child: poll
        if not _ours(pid, marker):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def is_running(state: StackState | None) -> bool:
    return bool(state and _ours(state.moto_pid, PROCESS_MARKERS["moto_pid"])
                and _ours(state.services_pid, PROCESS_MARKERS["services_pid"])
                and _ours(state.stripe_pid, PROCESS_MARKERS["stripe_pid"])
                and _accepts(state.moto_port) and _accepts(state.smtp_port) and _accepts(state.stripe_port)
                and (not state.mail_port or _accepts(state.mail_port)))


def _spawn(args: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps it
    try:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=REPO_ROOT, env=env, start_new_session=True)
    finally:
        log.close()


def _wait_until(check: Callable[[], bool], proc: subprocess.Popen, what: str, log_path: Path,
                timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise StackError(f"{what} exited with code {proc.returncode} while starting; log {log_path}:\n{tail}")
        time.sleep(0.05)
    raise StackError(f"{what} did not become ready within {timeout:.0f}s; log {log_path}")


def _moto_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/reset-auth", timeout=1) as r:
            return r.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


# --- commands --------------------------------------------------------------------------------

def up(config: StackConfig) -> tuple[StackState, bool]:
    """Starts the stack; returns (state, already_running). A running stack is left as it is."""
    started = time.monotonic()
    existing = StackState.load(config.state_dir)
    if is_running(existing):
        assert existing is not None
        return existing, True
    if existing is not None:  # stale: something died; clear what is left
        _stop_all(existing)
    moto_port = claim_port(config.moto_port, "DEVSTACK_MOTO_PORT")
    smtp_port = claim_port(config.smtp_port, "DEVSTACK_SMTP_PORT")
    if smtp_port == moto_port:
        smtp_port = claim_port(0, "DEVSTACK_SMTP_PORT")
    stripe_port = claim_port(config.stripe_port, "DEVSTACK_STRIPE_PORT")
    while stripe_port in (moto_port, smtp_port):
        stripe_port = claim_port(0, "DEVSTACK_STRIPE_PORT")
    mail_port = _mail_port(config.mail_port)
    while mail_port in (moto_port, smtp_port, stripe_port):
        mail_port = claim_port(0, "DEVSTACK_MAIL_PORT")
    config.state_dir.mkdir(parents=True, exist_ok=True)
    state = StackState(state_dir=str(config.state_dir), moto_port=moto_port, smtp_port=smtp_port,
                       stripe_port=stripe_port, mail_port=mail_port,
                       duckdb_path=str(config.duckdb_path), signature_version=config.signature_version,
                       started_at=time.time())
    moto_log = config.state_dir / "moto.log"
    # Tests purge the queues before each test; AWS (and moto by default) allow one purge a minute.
    moto_env = {**os.environ, "MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR": "false"}
    moto = _spawn([sys.executable, "-m", "devstack.moto_server", "-H", "127.0.0.1", "-p", str(moto_port)],
                  moto_log, moto_env)
    state.moto_pid = moto.pid
    state.save()
    try:
        # Started alongside moto: the sink listens at once; the simulator waits for the topology
        # to appear in state.json.
        services_log = config.state_dir / "services.log"
        args = [sys.executable, "-m", "devstack.services", "--state-dir", str(config.state_dir)]
        if config.watch_pid:
            args += ["--watch-pid", str(config.watch_pid)]
        services = _spawn(args, services_log)
        state.services_pid = services.pid
        state.save()
        # The local Stripe starts with delivery off; once the queues exist it is pointed at stripe-events.
        stripe_log = config.state_dir / "stripe.log"
        stripe_args = [sys.executable, "-m", "devstack.local_stripe", "--port", str(stripe_port),
                       "--source-id", STRIPE_SOURCE_ID, "--webhook-secret", STRIPE_WEBHOOK_SECRET]
        if config.watch_pid:
            stripe_args += ["--watch-pid", str(config.watch_pid)]
        stripe_proc = _spawn(stripe_args, stripe_log)
        state.stripe_pid = stripe_proc.pid
        state.save()
        load_or_create_signing_identity(state.cert_dir)
        _wait_until(lambda: _moto_ready(moto_port), moto, f"moto server on port {moto_port}", moto_log)
        topology = ensure_topology(client_factory(state.endpoint))
        state.topic_arn = topology.topic_arn
        state.queue_urls = topology.queue_urls
        state.save()
        _wait_until(lambda: _accepts(smtp_port), services, f"SMTP sink on port {smtp_port}", services_log)
        _wait_until(lambda: _accepts(mail_port), services, f"mail viewer on port {mail_port}", services_log)
        _wait_until(lambda: _stripe_ready(stripe_port), stripe_proc, f"local Stripe on port {stripe_port}", stripe_log)
        stripe_control(state, "delivery", mode="eventbridge", queue_url=state.queue_urls[STRIPE_QUEUE],
                       sqs_endpoint=state.endpoint, region=REGION)
    except BaseException:
        _stop_all(state)
        StackState.remove(config.state_dir)
        raise
    state.startup_seconds = round(time.monotonic() - started, 3)
    state.save()
    return state, False


def _mail_port(wanted: int | None) -> int:
    if wanted is not None:
        return claim_port(wanted, "DEVSTACK_MAIL_PORT")
    try:
        return claim_port(MAIL_VIEWER_PORT, "DEVSTACK_MAIL_PORT")
    except PortInUseError:
        return free_port()


def _stripe_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_control/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def stripe_control(state: StackState, path: str, method: str = "POST", **body: Any) -> Any:
    """Calls the local Stripe's /_control/<path> with a JSON body; returns the decoded answer."""
    request = urllib.request.Request(f"{state.stripe_base}/_control/{path}", method=method,
                                     data=json.dumps(body).encode() if method != "GET" else None,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise StackError(f"local Stripe /_control/{path} answered {exc.code}: "
                         f"{exc.read().decode(errors='replace')[:500]}") from None


def _stop_all(state: StackState) -> None:
    stop_pid(state.stripe_pid, PROCESS_MARKERS["stripe_pid"])
    stop_pid(state.services_pid, PROCESS_MARKERS["services_pid"])
    stop_pid(state.moto_pid, PROCESS_MARKERS["moto_pid"])


def down(state_dir: Path | str) -> bool:
    """Stops the stack recorded in state_dir; False when there was none."""
    state = StackState.load(state_dir)
    if state is None:
        return False
    _stop_all(state)
    StackState.remove(state_dir)
    return True


def status(state_dir: Path | str) -> dict:
    state = StackState.load(state_dir)
    if state is None:
        return {"running": False, "state_dir": str(state_dir)}
    return {
        "running": is_running(state),
        "state_dir": state.state_dir,
        "moto": {"endpoint": state.endpoint, "pid": state.moto_pid,
                 "alive": _ours(state.moto_pid, PROCESS_MARKERS["moto_pid"])},
        "smtp_sink": {"host": "127.0.0.1", "port": state.smtp_port, "pid": state.services_pid,
                      "alive": _ours(state.services_pid, PROCESS_MARKERS["services_pid"]),
                      "directory": str(state.sink_dir)},
        "mail_viewer": {"url": state.mail_url, "pid": state.services_pid, "directories":
                        [str(state.sink_dir), str(state.ses_mail_dir)]},
        "local_stripe": {"base": state.stripe_base, "pid": state.stripe_pid,
                         "alive": _ours(state.stripe_pid, PROCESS_MARKERS["stripe_pid"])},
        "topic_arn": state.topic_arn,
        "sns_cert_dir": str(state.cert_dir),
        "duckdb_path": state.duckdb_path,
        "startup_seconds": state.startup_seconds,
    }
