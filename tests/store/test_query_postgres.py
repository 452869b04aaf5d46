"""pipelines.query in the PostgreSQL profile: the ledgers a query names (one PostgreSQL snapshot)
and the reports it names (the asset store's objects on moto's S3), in one SQL, through the same
command; 100 of 100 queries from another process succeed while a writer republishes and commits."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid

import duckdb
import pytest

from pipelines.email import sends_daily
from pipelines.query import QueryError, main, run_postgres, tables_named
from pipelines.report_workspace import report_workspace
from pipelines.schema import create_tables
from pipelines.store.asset_store import AssetStore
from pipelines.store.postgres import PostgresDatabase
from pipelines.store.store import Store
from tests.paths import REPO_ROOT
from tests.servers import migrated_pg_database
from tests.store.ledger_rows import ledger_rows, write_rows


@pytest.fixture(scope="module")
def pg():
    with migrated_pg_database() as url, PostgresDatabase(url) as db:
        write_rows(Store(db.connect), ledger_rows(seed=3, messages=200))
        yield db


@pytest.fixture
def env(stack_env, pg, monkeypatch):
    url = f"s3://mailroom-assets/query-{uuid.uuid4().hex[:8]}"
    for name, value in {"MAILROOM_STORE": "postgres", "DATABASE_URL": pg.path, "ASSET_STORE_URL": url}.items():
        monkeypatch.setenv(name, value)
    return {**stack_env, "MAILROOM_STORE": "postgres", "DATABASE_URL": pg.path, "ASSET_STORE_URL": url}


def test_the_tables_a_query_names():
    assert tables_named("SELECT * FROM email_status s JOIN email_sends_daily d ON d.kind = s.kind") == (
        ["email_messages", "email_events"], ["email_sends_daily"])
    assert tables_named("select 1") == ([], [])


def test_ledgers_and_reports_in_one_query(env, pg, tmp_path, capsys):
    assets = AssetStore.from_url(env["ASSET_STORE_URL"])
    with report_workspace(pg, assets, reads=["email_messages"], writes=["email_sends_daily"]) as conn:
        sends_daily.materialize(conn)
    sql = ("SELECT (SELECT count(*) FROM email_messages) AS ledger, "
           "(SELECT sum(sent + skipped + failed + pending) FROM email_sends_daily) AS daily, "
           "(SELECT count(*) FROM email_status) AS statuses, (SELECT count(*) FROM billing_daily) AS unpublished")
    out = tmp_path / "o.csv"
    assert main([sql, "--csv", str(out)]) == 0
    assert out.read_text().splitlines() == ["ledger,daily,statuses,unpublished", "200,200,200,0"]
    assert main(["SELECT count(*) AS n FROM stripe_payments"]) == 0
    assert capsys.readouterr().out.split()[-2:] == ["n", "120"]
    assert main(["SELECT nope FROM email_messages"]) == 1
    assert "query failed" in capsys.readouterr().err


def test_a_report_without_an_asset_store_is_a_clear_error(pg):
    with pytest.raises(QueryError, match="ASSET_STORE_URL"):
        run_postgres("SELECT * FROM ses_reputation", pg.path, None)
    # (not the rows the concurrent-readers test of this module adds: w-...)
    assert run_postgres("SELECT count(*) AS n FROM organizations WHERE id NOT LIKE 'w-%'", pg.path,
                        None).split() == ["n", "60"]


READER = r"""
import csv, json, sys, tempfile
from pipelines.query import main
sql, out = sys.argv[1], {"ok": 0, "failed": 0, "inconsistent": [], "sizes": []}
with tempfile.TemporaryDirectory() as tmp:
    for i in range(100):
        path = f"{tmp}/{i}.csv"
        if main([sql, "--csv", path]) != 0:
            out["failed"] += 1
            continue
        row = list(csv.DictReader(open(path)))[0]
        if row["kinds"] != "1" or row["torn"] != "0" or row["n"] not in ("3", "50"):
            out["inconsistent"].append(row)
        else:
            out["ok"] += 1
            out["sizes"].append(int(row["n"]))
print(json.dumps(out))
"""


def test_100_queries_from_another_process_succeed_while_a_writer_republishes_and_commits(env, pg):
    assets = AssetStore.from_url(env["ASSET_STORE_URL"])
    versions = []
    for kind, n in (("a", 3), ("b", 50)):
        conn = duckdb.connect()
        create_tables(conn, ["email_sends_daily"])
        conn.execute(f"INSERT INTO email_sends_daily SELECT DATE '2026-01-01' + range::INTEGER, '{kind}', "
                     f"1, 0, 0, 0, 0, 0, 0, 0 FROM range({n})")
        versions.append(conn)
    assets.publish(versions[0], "email_sends_daily")
    stop = threading.Event()
    done = {"publishes": 0, "commits": 0}

    def writer():
        i = 0
        while not stop.is_set():
            assets.publish(versions[i % 2], "email_sends_daily")
            done["publishes"] += 1
            with Store(pg.connect).transaction() as conn:   # one ledger write: a pair of rows
                conn.execute("INSERT INTO quarantine (quarantine_id, source, raw_body, reason) VALUES (?, 'x', 'b', 'r')",
                             [f"w-{i}"])
                conn.execute("INSERT INTO organizations (id, name, type, created) VALUES (?, 'n', 'company', now())",
                             [f"w-{i}"])
            done["commits"] += 1
            i += 1
            stop.wait(0.02)   # ~50 rounds a second at most: the reader's process gets the CPU too

    sql = ("SELECT count(DISTINCT kind) AS kinds, count(*) AS n, "
           "(SELECT count(*) FROM quarantine WHERE quarantine_id LIKE 'w-%') "
           "- (SELECT count(*) FROM organizations WHERE id LIKE 'w-%') AS torn FROM email_sends_daily")
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        proc = subprocess.run([sys.executable, "-c", READER, sql], capture_output=True, text=True, timeout=600,
                              cwd=REPO_ROOT, env={**env, "PYTHONPATH": str(REPO_ROOT)})
    finally:
        stop.set()
        thread.join()
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (result["ok"], result["failed"], result["inconsistent"]) == (100, 0, [])
    assert set(result["sizes"]) == {3, 50}, "the writer never republished during the queries"
    assert done["publishes"] >= 10 and done["commits"] >= 10, done
