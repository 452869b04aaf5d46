"""DuckDBResource: schema on first use, and waiting for another process's write lock."""

import subprocess
import sys
import time

import duckdb
import pytest

from pipelines.schema import database
from resources.duckdb import DuckDBResource

HOLD = """
import sys, time, duckdb
conn = duckdb.connect(sys.argv[1])
conn.execute("CREATE TABLE IF NOT EXISTS held (x INT)")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.close()
"""


def _hold_lock(path, seconds):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_schema_is_created_once_and_is_idempotent(tmp_path):
    db = database(str(tmp_path / "a.duckdb"))
    with db.connect() as conn:
        tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"quarantine", "email_messages", "email_events", "email_addresses", "address_status_changes"} <= tables
    from pipelines.schema import ensure_schema

    with db.connect() as conn:
        ensure_schema(conn)  # again: no error, no change
        assert conn.execute("SELECT count(*) FROM email_messages").fetchone() == (0,)


def test_connect_waits_for_another_process(tmp_path):
    path = tmp_path / "b.duckdb"
    holder = _hold_lock(path, 1.5)
    started = time.monotonic()
    with database(str(path), lock_timeout_seconds=30).connect() as conn:
        waited = time.monotonic() - started
        assert conn.execute("SELECT count(*) FROM held").fetchone() == (0,)
    holder.wait(timeout=10)
    assert waited > 0.5


def test_connect_gives_up_after_the_timeout(tmp_path):
    path = tmp_path / "c.duckdb"
    holder = _hold_lock(path, 5)
    try:
        with pytest.raises(duckdb.IOException, match="lock"):
            with database(str(path), lock_timeout_seconds=0.3).connect():
                pass
    finally:
        holder.kill()
        holder.wait()
