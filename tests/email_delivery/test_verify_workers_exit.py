"""kill -9 of a run that verifies in worker processes leaves no process of it behind: its verify
workers and the multiprocessing resource tracker exit too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tests.paths import REPO_ROOT

RUN = textwrap.dedent("""
    import json, sys, time
    from pipelines.common.queue_message import QueueMessage
    from pipelines.common.sns.cert_store import CertStore
    from pipelines.common.sns.verify import SnsVerifier
    from pipelines.email_delivery.consumer import SesNotificationConsumer
    from pipelines.email_delivery.parallel import PreparePool
    from tests.email_delivery.ses_helpers import TOPIC, ses_message, signed, write_identity
    from pathlib import Path

    out = Path(sys.argv[1])
    identity = write_identity(out.parent / "certs")
    ingestor = SesNotificationConsumer(SnsVerifier([TOPIC], CertStore(out.parent / "certs")))
    pool = PreparePool(ingestor, workers=2, chunk=5)
    batch = [QueueMessage(f"m{i}", "rh", signed(identity, ses_message("Delivery", f"id-{i}", ["a@example.org"])))
             for i in range(20)]
    pool.submit(batch)
    prepared = pool.prepare(batch)          # an ingest in flight: verified in the workers
    assert prepared.events.num_rows == 20, prepared.outcomes
    out.write_text(json.dumps({"workers": pool.worker_pids()}))
    pool.submit([QueueMessage(f"n{i}", "rh", "{}") for i in range(3)])   # and more on its way
    time.sleep(600)
""")


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a zombie has exited; only its parent's wait is due)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def resource_trackers(parent: int) -> list[int]:
    """The multiprocessing resource trackers among parent's children (found by their command line)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and b"resource_tracker" in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_a_run_leaves_no_verify_worker_or_resource_tracker(tmp_path):
    out = tmp_path / "pids.json"
    root = REPO_ROOT
    run = subprocess.Popen([sys.executable, "-c", RUN, str(out)], cwd=root,
                           env={**os.environ, "PYTHONPATH": str(root)})
    try:
        deadline = time.monotonic() + 60
        while not out.exists() and time.monotonic() < deadline:
            assert run.poll() is None, "the run ended before its pool was up"
            time.sleep(0.1)
        pids = {**json.loads(out.read_text()), "trackers": resource_trackers(run.pid)}
        children = pids["workers"] + pids["trackers"]
        assert len(pids["workers"]) == 2 and len(pids["trackers"]) == 1, pids
        assert all(alive(p) for p in children)

        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in children if alive(p)] == [], "processes of the killed run are still alive"
    finally:
        if run.poll() is None:
            run.kill()
