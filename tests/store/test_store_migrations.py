"""Versioned migrations of the PostgreSQL store (pipelines/store/migrate.py) on the local server,
and the command that applies them (`MAILROOM_STORE=postgres python -m pipelines.schema`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from pipelines.schema import configured_store
from pipelines.store import migrate
from pipelines.store.migrate import MigrationError
from tests.servers import fresh_pg_database

REPO = Path(__file__).resolve().parents[2]
# The version a new migration file takes after the real ones (the tests add files as "NNNN_...").
NEXT = len(migrate.migrations()) + 1
N = f"{NEXT:04d}"


@pytest.fixture
def url():
    with fresh_pg_database() as u:
        yield u


@pytest.fixture
def conn(url):
    with psycopg.connect(url, autocommit=True) as c:
        yield c


@pytest.fixture
def folder(tmp_path):
    """A copy of the real migrations, to add to or tamper with."""
    shutil.copytree(migrate.POSTGRES_MIGRATIONS, tmp_path / "m")
    return tmp_path / "m"


def recorded(conn):
    return conn.execute("SELECT version, name, checksum, applied_at IS NOT NULL FROM schema_migrations "
                        "ORDER BY version").fetchall()


def test_applies_every_file_once_and_records_it(conn):
    files = migrate.migrations()
    assert [m.name for m in files][0] == "0001_ledgers.sql"
    assert migrate.migrate(conn) == [m.name for m in files]
    assert recorded(conn) == [(m.version, m.name, m.checksum, True) for m in files]
    assert migrate.migrate(conn) == []   # idempotent
    assert len(recorded(conn)) == len(files)
    migrate.require_current(conn)


def test_a_new_file_is_applied_after_the_others(conn, folder):
    migrate.migrate(conn, folder)
    (folder / f"{N}_drift_index.sql").write_text("CREATE INDEX drift_object ON billing_drift (object_id);\n")
    assert migrate.verify(conn, folder)[0].name == f"{N}_drift_index.sql"
    with pytest.raises(MigrationError, match=rf"{N}_drift_index\.sql.*python -m pipelines\.schema"):
        migrate.require_current(conn, folder)
    assert migrate.migrate(conn, folder) == [f"{N}_drift_index.sql"]
    assert [v for v, *_ in recorded(conn)] == list(range(1, NEXT + 1))


def test_a_failing_file_applies_nothing_of_itself(conn, folder):
    migrate.migrate(conn, folder)
    (folder / f"{N}_half.sql").write_text("CREATE TABLE half_done (id text);\nSELECT no_such_function();\n")
    with pytest.raises(psycopg.errors.UndefinedFunction):
        migrate.migrate(conn, folder)
    assert conn.execute("SELECT to_regclass('half_done')").fetchone()[0] is None
    assert [v for v, *_ in recorded(conn)] == list(range(1, NEXT))


def test_an_edited_applied_file_is_refused(conn, folder):
    migrate.migrate(conn, folder)
    path = folder / "0001_ledgers.sql"
    path.write_text(path.read_text() + "\n-- edited after release\n")
    with pytest.raises(MigrationError, match=r"0001_ledgers\.sql changed after it was applied"):
        migrate.migrate(conn, folder)
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate.require_current(conn, folder)


def test_a_version_the_code_does_not_know_is_refused(conn, folder):
    (folder / f"{N}_newer.sql").write_text("SELECT 1;\n")
    migrate.migrate(conn, folder)
    (folder / f"{N}_newer.sql").unlink()
    with pytest.raises(MigrationError, match=rf"records migration {NEXT} \({N}_newer\.sql\).*older than the database"):
        migrate.migrate(conn, folder)


@pytest.mark.parametrize("name,why", [("1_short.sql", "NNNN_words.sql"), ("0001_Upper.sql", "NNNN_words.sql")])
def test_a_misnamed_file_is_refused(tmp_path, name, why):
    (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=why):
        migrate.migrations(tmp_path)


def test_a_repeated_version_is_refused(tmp_path):
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationError, match="version 1 is also 0001_a.sql"):
        migrate.migrations(tmp_path)


def test_concurrent_deploys_apply_each_file_once(url):
    results, errors = [], []

    def deploy():
        try:
            with psycopg.connect(url, autocommit=True) as c:
                results.append(migrate.migrate(c))
        except Exception as exc:   # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=deploy) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    # Between two files the lock is released, so two deployers may share the files: each once.
    assert len(results) == 4
    assert sorted(name for applied in results for name in applied) == [m.name for m in migrate.migrations()]


def test_the_postgres_store_refuses_a_database_not_migrated(url):
    names = ", ".join(m.name for m in migrate.migrations())
    with pytest.raises(MigrationError, match=re.escape(f"not applied ({names})")):
        configured_store({"MAILROOM_STORE": "postgres", "DATABASE_URL": url})


def test_one_command_migrates_and_reports_without_the_password(url, conn):
    env = {k: v for k, v in os.environ.items() if k not in ("DUCKDB_PATH",)}
    env.update(MAILROOM_STORE="postgres", DATABASE_URL=url.replace("postgres@", "postgres:not-a-real-secret@"))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "pipelines.schema", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)

    first = run()
    assert first.returncode == 0, first.stderr
    names = [m.name for m in migrate.migrations()]
    assert f"applied {', '.join(names)}" in first.stdout and "not-a-real-secret" not in first.stdout
    again = run()
    assert again.returncode == 0 and "every migration already applied" in again.stdout
    status = run("--status")
    assert status.stdout.strip().splitlines() == [f"{n}: applied" for n in names]
    assert len(recorded(conn)) == len(names)
    with configured_store({"MAILROOM_STORE": "postgres", "DATABASE_URL": url}) as store:
        with store.read() as c:
            assert c.execute("SELECT count(*) FROM email_messages").fetchone()[0] == 0


def test_the_command_without_a_database_url_says_so():
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["MAILROOM_STORE"] = "postgres"
    out = subprocess.run([sys.executable, "-m", "pipelines.schema"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0
    assert "DATABASE_URL must be set when MAILROOM_STORE=postgres" in out.stderr
