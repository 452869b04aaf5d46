"""Ad-hoc queries while runs go on: `python -m bench.adhoc_queries [--n 10000] [--queries 100]`.

Three processes on one DuckDB file, each through the production code path:

- ingest: 10,000 signed SES notifications (5% duplicates) drained by run_consumer with the SES
  consumer (the ses drain op's batch size and inline verification), its Store as the op makes it,
  from an in-memory queue whose receive takes --receive-ms (an SQS receive of 10);
- sends: email requests drained by run_consumer with the email-requests consumer, sending at
  --rate (14/s, the local SES quota) through a transport that accepts at once, recording every
  --window sends; it runs until the ingest is done and is then stopped by SIGTERM (the clean stop);
- reader (this process): --queries ad-hoc queries, one every --interval seconds, each opening the
  file read-only with pipelines.query's retrying open (the command operators use), as an operator would.

Measured: reader failures and lock waits (p50/p95/max), writer failures, how stale the reader's
results are, and each writer's connection open+close cost. Staleness: the writers log every
commit (wall time, rows visible after it); a reader result is "stale" by the commits it does not
see that had completed before it got the file, and its data is as old as the newest commit it sees.

`--hold-seconds 10` runs the writers as before this change (one connection kept across batches
and sends for up to 10 s) for comparison.

Results: bench/results/adhoc_queries.json and a printed table.
"""

from __future__ import annotations

import argparse
import bisect
import json
import multiprocessing
import os
import signal
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from bench.report import print_table, write_results

RESULTS = Path(__file__).parent / "results" / "adhoc_queries.json"
TARGETS = {"reader_failures": 0, "writer_failures": 0, "p95_wait_s_max": 1.0}
QUERY = ("SELECT (SELECT count(*) FROM email_events) AS events, "
         "(SELECT count(*) FROM email_messages WHERE status = 'sent' AND request_id LIKE 'adhoc-%') AS sent")


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def recording_store(connect, hold_seconds: float, log_path: str, count_sql: str):
    """The op's Store, logging after each commit: wall time and the rows it made visible; and the
    time each open+close took (the cost of reopening)."""
    from pipelines.store.store import Store

    class RecordingStore(Store):
        opens_ms: list[float] = []

        @contextmanager
        def transaction(self):
            before = self.open_seconds
            with open(log_path, "a") as log:
                with super().transaction() as conn:
                    yield conn
                    n = conn.execute(count_sql).fetchone()[0]
                log.write(f"{time.time()} {n}\n")
            self.opens_ms.append((self.open_seconds - before) * 1e3)

    return RecordingStore(connect, hold_seconds)


class SlowQueue:
    """An in-memory queue whose receive call takes as long as an SQS receive does (--receive-ms)."""

    def __init__(self, inner, seconds: float):
        self.inner, self.seconds, self.queue_name = inner, seconds, "memory"

    def receive(self, max_messages: int = 10, wait_seconds: int = 1) -> list[dict]:
        time.sleep(self.seconds)
        return self.inner.receive(max_messages, wait_seconds)

    def delete(self, receipt_handles: list[str]) -> list[str]:
        return self.inner.delete(receipt_handles)


def ingest_main(db_path: str, cert_dir: str, bodies_path: str, log_path: str, hold: float, out_path: str,
                receive_seconds: float) -> None:
    from bench.memory_queue import MemoryQueue
    from bench.ses_ingest import make_ingestor
    from pipelines.common.consumer import run_consumer
    from pipelines.common.drain import DrainOptions
    from pipelines.email_delivery.jobs import DrainConfig
    from pipelines.schema import database

    bodies = json.loads(Path(bodies_path).read_text())
    db = database(db_path)
    result: dict = {}
    try:
        store = recording_store(lambda: db.connect(config={"threads": 1}), hold, log_path,
                                "SELECT count(*) FROM email_events")
        with open(log_path, "a") as log:   # the ingest starts: nothing of it committed yet
            log.write(f"{time.time()} 0\n")
        with store:
            report = run_consumer(SlowQueue(MemoryQueue(bodies), receive_seconds), make_ingestor(cert_dir), store,
                                  DrainOptions(
                max_messages=len(bodies), max_seconds=float("inf"), batch_size=DrainConfig().batch_size))
        result = {"ok": True, **report.counters.as_metadata(), "seconds": round(report.seconds, 2),
                  "opens": store.opens, "open_close_ms_p50": round(pct(store.opens_ms, 0.5), 1),
                  "open_close_ms_p95": round(pct(store.opens_ms, 0.95), 1)}
    except Exception as exc:  # noqa: BLE001 - a writer failure is a result
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    Path(out_path).write_text(json.dumps(result))


class AcceptingTransport:
    """Accepts every message at once: the sends' pace is the run's rate limiter."""

    def __init__(self):
        self.n = 0

    def send(self, email):
        self.n += 1
        return f"adhoc-{self.n}"

    def max_send_rate(self):
        return None


def sends_main(db_path: str, log_path: str, hold: float, rate: float, window: int, out_path: str) -> None:
    from bench.email_dispatch import SENDER, request_stream
    from bench.memory_queue import MemoryQueue
    from pipelines.common.consumer import run_consumer
    from pipelines.common.drain import DrainOptions
    from pipelines.common.stop import stop_on_signals
    from pipelines.email.consumer import EmailRequestConsumer
    from pipelines.email_delivery.ingest import relink_orphans
    from pipelines.email.builder import Builder
    from pipelines.email.jobs import SendEmailBatchConfig
    from pipelines.email.sending import Sender
    from pipelines.schema import database

    db = database(db_path)
    result: dict = {}
    try:
        with stop_on_signals() as stop:
            store = recording_store(db.connect, hold, log_path,
                                    "SELECT count(*) FROM email_messages WHERE status = 'sent' "
                                    "AND request_id LIKE 'adhoc-%'")
            sender = Sender(AcceptingTransport(), concurrency=8, rate=rate)
            with EmailRequestConsumer(Builder(), sender, default_sender=SENDER, transport_name="bench",
                                      inflight_window=window, on_recorded=relink_orphans) as consumer, store:
                report = run_consumer(MemoryQueue(request_stream(100_000, prefix="adhoc")), consumer, store,
                                      DrainOptions(max_messages=100_000, max_seconds=float("inf"),
                                                   batch_size=SendEmailBatchConfig().batch_size), stop=stop)
        result = {"ok": True, "stopped_cleanly": report.stopped, **report.counters.as_metadata(),
                  "seconds": round(report.seconds, 2), "opens": store.opens,
                  "open_close_ms_p50": round(pct(store.opens_ms, 0.5), 1),
                  "open_close_ms_p95": round(pct(store.opens_ms, 0.95), 1)}
    except Exception as exc:  # noqa: BLE001
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    Path(out_path).write_text(json.dumps(result))


def read_log(path: Path) -> tuple[list[float], list[int]]:
    times, counts = [], []
    if path.exists():
        for line in path.read_text().splitlines():
            t, n = line.split()
            times.append(float(t))
            counts.append(int(n))
    return times, counts


def staleness(queries: list[dict], log: tuple[list[float], list[int]], key: str) -> dict:
    """Per query while this writer was committing: commits it missed (completed before it had the
    file, not in its result) and the age of the newest commit it saw."""
    times, counts = log
    missed, ages = 0, []
    for q in queries:
        if not q["ok"] or not times or not times[0] <= q["opened_at"] <= times[-1]:
            continue
        i = bisect.bisect_right(times, q["opened_at"])   # commits completed before the open
        if i == 0:
            continue
        if q[key] < counts[i - 1]:
            missed += 1
        seen = bisect.bisect_right(counts, q[key], hi=i)   # commits whose rows the result includes
        if seen:
            ages.append(q["opened_at"] - times[seen - 1])
    return {"queries_missing_a_completed_commit": missed,
            "age_of_newest_seen_commit_s_p50": round(pct(ages, 0.5), 3),
            "age_of_newest_seen_commit_s_p95": round(pct(ages, 0.95), 3),
            "age_of_newest_seen_commit_s_max": round(max(ages), 3) if ages else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000, help="SES notifications ingested")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--interval", type=float, default=0.05, help="seconds between ad-hoc queries")
    ap.add_argument("--receive-ms", type=float, default=20.0,
                    help="time one SQS receive (10 messages) takes; the queue is in memory")
    ap.add_argument("--wait", type=float, default=30.0, help="the query command's lock wait (its default)")
    ap.add_argument("--rate", type=float, default=14.0, help="sends per second (the local SES quota)")
    ap.add_argument("--window", type=int, default=20, help="sends recorded per commit")
    ap.add_argument("--hold-seconds", type=float, default=0.0,
                    help="writers keep a connection this long (0: per commit, the default; 10: as before)")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--ingest-timeout", type=float, default=600.0,
                    help="seconds the ingest may run on after the queries are done")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    from bench.ses_ingest import make_dataset, setup_db
    from devstack.sns_signer import generate_signing_identity
    from pipelines.query import QueryError, read_only

    work = Path(tempfile.mkdtemp(prefix="bench-adhoc-"))
    identity = generate_signing_identity()
    cert_dir = work / "certs"
    cert_dir.mkdir()
    (cert_dir / identity.cert_name).write_bytes(identity.cert_pem)
    bodies, messages, _ = make_dataset(args.n, args.seed, identity)
    db_path = str(work / "mailroom.duckdb")
    setup_db(db_path, messages)
    bodies_path = work / "bodies.json"
    bodies_path.write_text(json.dumps(bodies))
    logs = {"ingest": work / "ingest.log", "sends": work / "sends.log"}
    outs = {"ingest": work / "ingest.json", "sends": work / "sends.json"}
    print(f"{len(bodies):,} notifications signed; writers hold the file "
          f"{'per commit' if args.hold_seconds <= 0 else f'up to {args.hold_seconds} s'}", flush=True)

    ctx = multiprocessing.get_context("spawn")
    sends = ctx.Process(target=sends_main, args=(db_path, str(logs["sends"]), args.hold_seconds, args.rate,
                                                 args.window, str(outs["sends"])))
    sends.start()
    time.sleep(2.0)   # sends under way before the ingest starts
    ingest = ctx.Process(target=ingest_main, args=(db_path, str(cert_dir), str(bodies_path), str(logs["ingest"]),
                                                   args.hold_seconds, str(outs["ingest"]), args.receive_ms / 1e3))
    ingest.start()
    while not logs["ingest"].exists() and ingest.is_alive():   # its imports and dataset load
        time.sleep(0.05)
    started = time.time()
    queries: list[dict] = []
    for i in range(args.queries):
        t0 = time.monotonic()
        q: dict = {}
        try:
            with read_only(db_path, args.wait) as (conn, waited):
                q["opened_at"] = time.time()
                q["events"], q["sent"] = conn.execute(QUERY).fetchone()
            q.update(ok=True, wait_s=waited)
        except QueryError as exc:
            q.update(ok=False, error=str(exc)[:200])
        q["latency_s"] = time.monotonic() - t0
        queries.append(q)
        time.sleep(args.interval)
    reader_seconds = time.time() - started
    ingest.join(args.ingest_timeout)
    if ingest.is_alive():   # starved of the lock: a writer failure, recorded as such
        ingest.terminate()
        ingest.join()
        outs["ingest"].write_text(json.dumps({"ok": False, "error": f"not done {args.ingest_timeout:g} s after "
                                                                    "the queries ended; terminated"}))
    os.kill(sends.pid, signal.SIGTERM)
    sends.join(60)
    writers = {name: json.loads(p.read_text()) if p.exists() else {"ok": False, "error": "no result"}
               for name, p in outs.items()}

    ingest_commits = read_log(logs["ingest"])[0]
    for q in queries:   # during the ingest: between its start and its last commit
        q["during_ingest"] = bool(ingest_commits) and ingest_commits[0] <= q.get("opened_at", 0) <= ingest_commits[-1]
    ok = [q for q in queries if q["ok"]]
    waits = [q["wait_s"] for q in ok]
    latencies = [q["latency_s"] for q in ok]
    results = {
        "n": args.n, "queries": args.queries, "interval_s": args.interval, "rate": args.rate,
        "receive_ms": args.receive_ms,
        "window": args.window, "hold_seconds": args.hold_seconds, "cpus": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "targets": TARGETS,
        "reader": {"failures": len(queries) - len(ok), "during_ingest": sum(q["during_ingest"] for q in queries),
                   "seconds": round(reader_seconds, 1),
                   "wait_s_p50": round(pct(waits, 0.5), 3), "wait_s_p95": round(pct(waits, 0.95), 3),
                   "wait_s_max": round(max(waits), 3) if waits else None,
                   "latency_s_p50": round(pct(latencies, 0.5), 3), "latency_s_p95": round(pct(latencies, 0.95), 3),
                   "errors": sorted({q["error"] for q in queries if not q["ok"]})[:3]},
        "staleness": {"events": staleness(queries, read_log(logs["ingest"]), "events"),
                      "sent": staleness(queries, read_log(logs["sends"]), "sent")},
        "writers": writers,
    }
    results["writer_failures"] = sum(not w.get("ok") or w.get("internal_errors", 0) > 0 for w in writers.values())
    write_results(results, Path(args.out))
    r, ing, snd = results["reader"], writers["ingest"], writers["sends"]
    print_table([
        ("reader failures", f"{r['failures']} of {args.queries}", "0"),
        ("queries during the ingest", r["during_ingest"], f"{args.queries}"),
        ("reader lock wait p50 / p95 / max", f"{r['wait_s_p50']} / {r['wait_s_p95']} / {r['wait_s_max']} s", "p95 < 1 s"),
        ("writer failures", results["writer_failures"], "0"),
        ("ingest", f"{ing.get('received')} in {ing.get('seconds')} s", ""),
        ("sends", f"{snd.get('sent')} sent, stopped cleanly {snd.get('stopped_cleanly')}", ""),
        ("open+close per commit p50 (ingest / sends)",
         f"{ing.get('open_close_ms_p50')} / {snd.get('open_close_ms_p50')} ms", "the cost of reopening"),
        ("results missing a completed commit",
         f"{results['staleness']['events']['queries_missing_a_completed_commit']} / "
         f"{results['staleness']['sent']['queries_missing_a_completed_commit']}", "0"),
        ("age of newest data seen p95 (events / sent)",
         f"{results['staleness']['events']['age_of_newest_seen_commit_s_p95']} / "
         f"{results['staleness']['sent']['age_of_newest_seen_commit_s_p95']} s", ""),
    ])
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
