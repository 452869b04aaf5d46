"""The production profile: .dagster/production/dagster.yaml on a real PostgreSQL, steps on Celery.

Needs PostgreSQL (trust auth, user postgres) at 127.0.0.1:5432 and RabbitMQ (guest/guest) at
127.0.0.1:5672. Each session creates and drops its own database mailroom_test_<epoch>_<random>
and routes Celery tasks through its own queue, so concurrent sessions don't meet. An unreachable
server skips these tests, or fails them when CI=true.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import kombu
import psycopg2
import pytest
import yaml
from dagster_celery.cli import get_config_dir

from pipelines import executors
from pipelines.executors import mailroom_executor
from tests.paths import REPO_ROOT
from tests.servers import require_server

REPO = REPO_ROOT
PROFILE = REPO / ".dagster" / "production"
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
AMQP_HOST, AMQP_PORT = "127.0.0.1", 5672
DB_PREFIX = "mailroom_test_"
BROKER_URL = f"pyamqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}//"
STEP_SECONDS = 1.0
RUN_DEADLINE_SECONDS = 120

# One database and one Celery worker for the module: its tests stay on one xdist worker.
pytestmark = pytest.mark.xdist_group("production-profile")


def _span(tag: str) -> dict:
    start = time.time()
    time.sleep(STEP_SECONDS)
    return {"tag": tag, "pid": os.getpid(), "start": start, "end": time.time()}


# Jobs for the tests. Steps run in other processes, which import this module by name.
@dg.op(pool="duckdb")
def duckdb_writer_a() -> dict:
    return _span("a")


@dg.op(pool="duckdb")
def duckdb_writer_b() -> dict:
    return _span("b")


@dg.job(executor_def=mailroom_executor)
def pool_job():
    duckdb_writer_a()
    duckdb_writer_b()


@dg.op
def where_first() -> dict:
    return {"pid": os.getpid()}


@dg.op(pool="duckdb")
def where_second(first: dict) -> dict:
    return {"pid": os.getpid(), "first": first}


@dg.job(executor_def=mailroom_executor)
def celery_job():
    where_second(where_first())


def job_by_name(name: str) -> dg.JobDefinition:
    return globals()[name]


def recon(name: str):
    # dagster drops sys.path[0] (pytest puts the repository root there) before importing a job's
    # module (tests.test_production_profile) in another process; an explicit working directory
    # keeps it importable.
    return dg.build_reconstructable_job(
        __name__, job_by_name.__name__, (name,), reconstructor_working_directory=str(REPO))


@contextmanager
def deadline(seconds: int):
    """A hung run (a step process lost, a worker not consuming) fails the test instead of blocking."""
    def expire(signum, frame):
        raise TimeoutError(f"run not finished within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# Fixtures


@pytest.fixture(scope="module")
def pg_database():
    require_server("PostgreSQL", PG_HOST, PG_PORT)
    now = int(time.time())
    name = f"{DB_PREFIX}{now}_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            # A session killed outright leaves its database behind; sweep those older than 2 h.
            cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (DB_PREFIX + "%",))
            for (stale,) in cur.fetchall():
                created = stale[len(DB_PREFIX):].split("_")[0]
                if created.isdigit() and int(created) < now - 7200:
                    cur.execute(f'DROP DATABASE IF EXISTS "{stale}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="module")
def production_env(pg_database, tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster_production_home")
    shutil.copy(PROFILE / "dagster.yaml", home / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": PG_HOST,
        "DAGSTER_PG_PORT": str(PG_PORT),
        "DAGSTER_PG_USER": PG_USER,
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": pg_database,
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for key in (executors.EXECUTOR_ENV, executors.BROKER_ENV, executors.BACKEND_ENV, executors.QUEUE_ENV):
            mp.delenv(key, raising=False)
        yield env


@pytest.fixture(scope="module")
def instance(production_env):
    with dg.DagsterInstance.get() as inst:
        yield inst


@pytest.fixture(scope="module")
def pg(pg_database):
    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=pg_database)
    conn.autocommit = True
    yield conn
    conn.close()


def _query(conn, sql: str, *params):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def _ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        with open(f"/proc/{pid}/stat") as f:
            # The command name (field 2) is parenthesised and may hold spaces.
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def _die_with_pytest() -> None:
    if sys.platform == "linux":  # PR_SET_PDEATHSIG: a killed pytest takes the worker with it
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


@pytest.fixture(scope="module")
def celery_worker(production_env, tmp_path_factory):
    """A Celery worker on a queue of its own, started as `dagster-celery worker start -y
    .dagster/production/celery.yaml` starts it, but as our direct child so it cannot outlive us."""
    require_server("RabbitMQ", AMQP_HOST, AMQP_PORT)
    queue = f"mailroom-test-{uuid.uuid4().hex[:12]}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(executors.BROKER_ENV, BROKER_URL)
        config_dir = get_config_dir(str(PROFILE / "celery.yaml"))
    pythonpath = os.pathsep.join(filter(None, [config_dir, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath}
    log = tmp_path_factory.mktemp("celery") / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "dagster_celery.app", "worker",
             "--prefetch-multiplier=1", "--loglevel", "INFO", "-Q", queue, "-n", f"{queue}@%h",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_pytest,
        )
    try:
        ready_by = time.monotonic() + 60
        while b" ready." not in log.read_bytes():
            assert proc.poll() is None, f"celery worker exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < ready_by, f"celery worker not ready in 60 s: {log.read_text()[-2000:]}"
            time.sleep(0.2)
        yield {"proc": proc, "queue": queue, "log": log}
    finally:
        proc.send_signal(signal.SIGQUIT)  # Celery's cold shutdown; nothing is running by now
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with kombu.Connection(BROKER_URL, connect_timeout=5) as conn:
            conn.default_channel.queue_delete(queue)


# Tests that need no server


def test_production_profile_keeps_local_pools_and_run_monitoring():
    local = yaml.safe_load((REPO / ".dagster" / "dagster.yaml").read_text())
    prod = yaml.safe_load((PROFILE / "dagster.yaml").read_text())
    assert prod["concurrency"] == local["concurrency"]
    assert prod["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}
    assert prod["run_monitoring"] == local["run_monitoring"]
    assert prod["telemetry"] == {"enabled": False}
    assert prod["run_coordinator"]["class"] == "QueuedRunCoordinator"
    db = prod["storage"]["postgres"]["postgres_db"]
    assert {k: v for k, v in db.items() if k != "scheme"} == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
    }


def test_executor_choice_is_read_at_run_time(monkeypatch):
    monkeypatch.delenv(executors.EXECUTOR_ENV, raising=False)
    assert executors.selected_executor() == "multiprocess"
    monkeypatch.setenv(executors.EXECUTOR_ENV, "celery")
    assert executors.selected_executor() == "celery"
    monkeypatch.setenv(executors.EXECUTOR_ENV, "Celery")
    with pytest.raises(dg.DagsterInvariantViolationError, match="MAILROOM_EXECUTOR must be one of"):
        executors.selected_executor()


@dg.job
def _a_job():
    pass


def test_multiprocess_steps_fork_from_a_forkserver_unless_the_run_config_says_otherwise(monkeypatch):
    monkeypatch.delenv(executors.EXECUTOR_ENV, raising=False)
    job = dg.reconstructable(_a_job)

    def start_method(config: dict) -> str:
        with dg.DagsterInstance.ephemeral() as instance:
            made = executors.mailroom_executor.executor_creation_fn(dg.InitExecutorContext(
                job=job, executor_def=executors.mailroom_executor, executor_config=config, instance=instance))
        return made.inner._start_method

    assert start_method({"multiprocess": {"retries": {"enabled": {}}}}) == "forkserver"
    assert start_method({"multiprocess": {"retries": {"enabled": {}}, "start_method": {"spawn": {}}}}) == "spawn"


def test_celery_config_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(executors.BROKER_ENV, raising=False)
    with pytest.raises(dg.DagsterInvariantViolationError, match="needs CELERY_BROKER_URL"):
        executors.celery_config({"enabled": {}})
    monkeypatch.setenv(executors.BROKER_ENV, "pyamqp://user:s3cret@mq.internal:5672//")
    monkeypatch.delenv(executors.BACKEND_ENV, raising=False)
    monkeypatch.delenv(executors.QUEUE_ENV, raising=False)
    config = executors.celery_config({"enabled": {}})
    assert config == {
        "broker": "pyamqp://user:s3cret@mq.internal:5672//",
        "backend": "rpc://",
        "config_source": {"task_default_queue": "dagster"},
        "retries": {"enabled": {}},
    }


def test_code_location_uses_the_switching_executor(monkeypatch):
    # Importing the code location must not depend on the executor variables.
    monkeypatch.setenv(executors.EXECUTOR_ENV, "not-an-executor")
    from pipelines.definitions import defs

    assert defs.executor is mailroom_executor, (
        "pipelines/definitions.py: pass executor=mailroom_executor (pipelines.executors) to its Definitions")
    assert all(job.executor_def is mailroom_executor for job in defs.resolve_all_job_defs())


@pytest.mark.parametrize("ci, outcome", [("", pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_unreachable_server_skips_locally_and_fails_on_ci(monkeypatch, ci, outcome):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=f"PostgreSQL not reachable at 127.0.0.1:{port}"):
        require_server("PostgreSQL", "127.0.0.1", port)


# Tests against the real servers


def test_instance_is_postgres_with_queued_runs_and_duckdb_pool_of_one(instance):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
    assert instance.run_monitoring_enabled
    assert not instance.telemetry_enabled
    pools = instance.get_concurrency_config().pool_config
    assert (pools.default_pool_limit, pools.pool_granularity.value) == (1, "op")


def test_job_runs_end_to_end_with_duckdb_pool_of_one(instance, pg):
    run_config = {"execution": {"config": {"multiprocess": {"max_concurrent": 4}}}}
    with deadline(RUN_DEADLINE_SECONDS), \
            dg.execute_job(recon("pool_job"), instance=instance, run_config=run_config) as result:
        assert result.success
        run_id = result.run_id
        a, b = (result.output_for_node(name) for name in ("duckdb_writer_a", "duckdb_writer_b"))

    # Default executor: each step in its own process, both ready at once; the pool runs them in turn.
    assert len({a["pid"], b["pid"], os.getpid()}) == 3
    first, second = sorted((a, b), key=lambda s: s["start"])
    assert first["end"] <= second["start"]

    assert _query(pg, "SELECT pipeline_name, status FROM runs WHERE run_id = %s", run_id) == [
        ("pool_job", "SUCCESS")]
    finished = _query(pg, "SELECT step_key FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
                      run_id, "STEP_SUCCESS")
    assert sorted(k for (k,) in finished) == ["duckdb_writer_a", "duckdb_writer_b"]
    blocked = _query(pg, "SELECT step_key FROM event_logs WHERE run_id = %s AND event LIKE %s",
                     run_id, "%Step blocked by limit for pool duckdb%")
    assert len(blocked) >= 1 and {k for (k,) in blocked} <= {"duckdb_writer_a", "duckdb_writer_b"}
    assert _query(pg, 'SELECT "limit", using_default_limit FROM concurrency_limits '
                      "WHERE concurrency_key = 'duckdb'") == [(1, True)]
    assert _query(pg, "SELECT count(*) FROM concurrency_slots WHERE concurrency_key = 'duckdb'") == [(1,)]
    assert _query(pg, "SELECT count(*) FROM concurrency_slots WHERE run_id IS NOT NULL") == [(0,)]


def test_explicit_in_process_config_stays_in_process_under_celery(instance, monkeypatch):
    monkeypatch.setenv(executors.EXECUTOR_ENV, "celery")  # and no broker: the Celery path would raise
    run_config = {"execution": {"config": {"in_process": {}}}}
    with deadline(RUN_DEADLINE_SECONDS), \
            dg.execute_job(recon("celery_job"), instance=instance, run_config=run_config) as result:
        assert result.success
        second = result.output_for_node("where_second")
    assert second["pid"] == second["first"]["pid"] == os.getpid()


# dagster-celery re-registers its task on every submission; the warning is about that, not us.
@pytest.mark.filterwarnings("ignore:Task name 'execute_plan' is already registered")
def test_job_steps_run_in_the_celery_worker(instance, pg, celery_worker, monkeypatch):
    monkeypatch.setenv(executors.EXECUTOR_ENV, "celery")
    monkeypatch.setenv(executors.BROKER_ENV, BROKER_URL)
    monkeypatch.setenv(executors.QUEUE_ENV, celery_worker["queue"])
    with deadline(RUN_DEADLINE_SECONDS), dg.execute_job(recon("celery_job"), instance=instance) as result:
        assert result.success
        run_id = result.run_id
        second = result.output_for_node("where_second")

    worker_pid = celery_worker["proc"].pid
    for pid in (second["first"]["pid"], second["pid"]):
        assert pid != os.getpid()
        assert worker_pid in _ancestors(pid), f"step pid {pid} is not under the worker {worker_pid}"

    assert _query(pg, "SELECT pipeline_name, status FROM runs WHERE run_id = %s", run_id) == [
        ("celery_job", "SUCCESS")]
    submitted = _query(pg, "SELECT step_key FROM event_logs WHERE run_id = %s AND event LIKE %s",
                       run_id, f'%to queue %{celery_worker["queue"]}%')
    assert sorted(k for (k,) in submitted) == ["where_first", "where_second"]
    in_worker = _query(pg, "SELECT step_key FROM event_logs WHERE run_id = %s AND event LIKE %s",
                       run_id, "%in celery worker%")
    assert sorted(k for (k,) in in_worker) == ["where_first", "where_second"]
