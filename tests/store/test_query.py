"""pipelines.query: read-only ad-hoc queries that wait out a writer's lock instead of failing."""

from __future__ import annotations

import subprocess
import sys
import time

import duckdb
import pytest

from pipelines.query import QueryError, main, run


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "q.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE t AS SELECT range AS n, 'x' || range AS s FROM range(5)")
    return str(path)


def test_prints_a_table(db):
    out = run("SELECT n, s FROM t ORDER BY n", db)
    assert out.split("\n")[0].split() == ["n", "s"]
    assert out.split("\n")[-1].split() == ["4", "x4"]


def test_writes_csv_and_parquet(db, tmp_path):
    csv, pq = tmp_path / "o.csv", tmp_path / "o.parquet"
    assert main(["SELECT count(*) AS c FROM t", "--db", db, "--csv", str(csv)]) == 0
    assert csv.read_text().split() == ["c", "5"]
    assert main(["SELECT * FROM t", "--db", db, "--parquet", str(pq)]) == 0
    assert duckdb.sql(f"SELECT count(*) FROM '{pq}'").fetchall() == [(5,)]


def test_bad_sql_and_missing_file_are_clear_errors(db, tmp_path, capsys):
    assert main(["SELECT nope FROM t", "--db", db]) == 1
    assert "query failed" in capsys.readouterr().err
    with pytest.raises(QueryError, match="no DuckDB file"):
        run("SELECT 1", str(tmp_path / "absent.duckdb"))


def test_waits_for_a_writer_holding_the_lock(db):
    # Another process holds the write lock for ~1.5 s; the query waits and then succeeds.
    holder = subprocess.Popen([sys.executable, "-c",
                               f"import duckdb,time; c=duckdb.connect({db!r}); print('held', flush=True); "
                               "time.sleep(1.5); c.close()"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        out = run("SELECT count(*) AS c FROM t", db, wait_seconds=20)
        assert time.monotonic() - started >= 0.5
        assert out.split() == ["c", "5"]
    finally:
        holder.wait(timeout=10)


def test_gives_up_after_the_wait(db):
    holder = subprocess.Popen([sys.executable, "-c",
                               f"import duckdb,time; c=duckdb.connect({db!r}); print('held', flush=True); "
                               "time.sleep(5); c.close()"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(QueryError, match="could not open .* read-only after"):
            run("SELECT 1", db, wait_seconds=0.3)
    finally:
        holder.kill()
        holder.wait()
