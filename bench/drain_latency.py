"""Drain at network speed: `python -m bench.drain_latency [--latencies 0,10,20,50]`.

End-to-end messages/s of the drain op's code (run_consumer with SQSQueueResource and a real
boto3 client) against an SQS with a round trip: bench/sqs_endpoint.py in its own process,
each call held for the given latency. For SES notifications (signed, verified in the op's
worker processes, written to DuckDB) and email requests (rendered, claimed and recorded,
null transport), at each latency:
- concurrent: the kit's drain with the op's defaults (receivers and deleters in flight);
- sequential: the same code path with DrainOptions.sequential() (one receiver, no prefetch,
  deletes one call after another): the drain as it was before, the baseline;
and once, the in-process figure (an in-memory queue, same consumer and options).

Each point runs in a fresh consumer process on a fresh queue and DuckDB file; it reports
messages/s, SQS calls per message (the consumer's count and the endpoint's), peak RSS (the
consumer's process plus its workers), CPU seconds of the consumer and the endpoint, and how
many messages the endpoint handed out more than once (a visibility timeout that ran out).

Results: bench/results/drain_latency.json and a printed table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from bench.report import print_table, write_results

RESULTS = Path(__file__).parent / "results" / "drain_latency.json"
TARGETS = {"ses_share_of_in_process_min": 0.5, "speedup_vs_sequential_min": 10.0, "received_again_max": 0,
           "sqs_calls_per_message_max": 0.25, "latency_ms": 20}
VISIBILITY_TIMEOUT = 30   # SQS's default; what the op's queues use


# ---- the consumer process -----------------------------------------------------------------------

def _cpu_seconds(pid: int | str) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def options_for(workload: str, mode: str, n: int, receivers: int | None):
    if workload == "ses":
        from pipelines.email_delivery.jobs import DrainConfig
        base = DrainConfig().drain_options()
    else:
        from pipelines.email.jobs import SendEmailBatchConfig
        base = SendEmailBatchConfig().drain_options()
    base = replace(base, max_messages=n, max_seconds=600.0)
    if mode == "sequential":
        from pipelines.common.drain import DrainOptions
        return DrainOptions.sequential(**{k: getattr(base, k) for k in (
            "max_messages", "max_seconds", "batch_size", "wait_seconds", "empty_polls_to_stop", "visibility_share")})
    if receivers:
        base = replace(base, receivers=receivers)
    return base


def consumer_main(a) -> None:
    from contextlib import ExitStack

    from bench.memory_queue import MemoryQueue
    from bench.ses_ingest import consumer_for, peak_rss_mb
    from pipelines.common.consumer import run_consumer
    from pipelines.schema import database
    from pipelines.store.store import Store
    from resources.aws import SQSQueueResource

    db = database(a.db)
    options = options_for(a.workload, a.mode, a.n, a.receivers)
    with ExitStack() as stack:
        if a.workload == "ses":
            consumer = stack.enter_context(consumer_for(a.cert_dir, a.workers)) if a.workers else consumer_for(a.cert_dir, 0)
            connect = lambda: db.connect(config={"threads": 1})  # noqa: E731 - as the op connects
            bodies = lambda: json.loads(Path(a.bodies).read_text())[:a.n]  # noqa: E731
        else:
            from bench.email_dispatch import NullTransport, request_stream, seed_suppressed
            from pipelines.email.consumer import EmailRequestConsumer
            from pipelines.email_delivery.ingest import relink_orphans
            from pipelines.email.builder import Builder
            from pipelines.email.sending import RetryPolicy, Sender

            seed_suppressed(a.db)
            consumer = stack.enter_context(EmailRequestConsumer(
                Builder(), Sender(NullTransport(), concurrency=8, policy=RetryPolicy(max_attempts=5, base_delay=0.05)),
                default_sender="noreply@mailroom.test", transport_name="null", inflight_window=100,
                on_recorded=relink_orphans))
            connect = db.connect
            bodies = lambda: request_stream(a.n, prefix="d")  # noqa: E731
        queue = (MemoryQueue(bodies()) if a.queue == "memory"
                 else SQSQueueResource(queue_name=a.queue, region_name="us-east-1"))
        if a.queue != "memory":
            queue.visibility_timeout()     # the client and the URL, outside the timed part (the op does it too)
        store = stack.enter_context(Store(connect, hold_seconds=10.0))
        cpu0 = time.process_time()
        report = run_consumer(queue, consumer, store, options)
        cpu = time.process_time() - cpu0
        pids = consumer.worker_pids() if hasattr(consumer, "worker_pids") else []
        workers_rss = sum(peak_rss_mb(p) for p in pids)
        workers_cpu = sum(_cpu_seconds(p) for p in pids)
    print(json.dumps({**report.counters.as_metadata(), "sqs_calls": report.sqs_calls, "seconds": report.seconds,
                      "main_peak_rss_mb": round(peak_rss_mb(), 1), "workers_peak_rss_mb": round(workers_rss, 1),
                      "peak_rss_mb": round(peak_rss_mb() + workers_rss, 1), "cpu_seconds": round(cpu, 3),
                      "workers_cpu_seconds": round(workers_cpu, 2),
                      "options": {"receivers": options.receivers, "deleters": options.deleters,
                                  "prefetch": options.prefetch, "batch_size": options.batch_size,
                                  "extend_visibility": options.extend_visibility}}))


# ---- the driver ---------------------------------------------------------------------------------

class Endpoint:
    """bench/sqs_endpoint.py in its own process, and a client to fill its queues."""

    def __init__(self):
        import boto3

        self.proc = subprocess.Popen([sys.executable, "-m", "bench.sqs_endpoint", "--port", "0"],
                                     stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().split()[-1]
        self.sqs = boto3.client("sqs", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="testing",
                                aws_secret_access_key="testing")

    def control(self, action: str, **body) -> dict:
        import urllib.request

        req = urllib.request.Request(self.url + "/", data=json.dumps(body).encode(), method="POST",
                                     headers={"X-Amz-Target": f"MailroomBench.{action}",
                                              "Content-Type": "application/x-amz-json-1.0"})
        with urllib.request.urlopen(req) as resp:
            return json.loads(resp.read())

    def fill(self, bodies: list[str]) -> str:
        self.control("Configure", latency_ms=0)
        name = f"drain-{uuid.uuid4().hex[:10]}"
        url = self.sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(VISIBILITY_TIMEOUT)})["QueueUrl"]

        def send(start: int) -> None:
            self.sqs.send_message_batch(QueueUrl=url, Entries=[
                {"Id": str(j), "MessageBody": b} for j, b in enumerate(bodies[start:start + 10])])

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(send, range(0, len(bodies), 10)))
        return name

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def run_point(ep: Endpoint | None, workload: str, mode: str, latency: float | None, bodies: list[str], work: Path,
              prepare_db, common: list[str], receivers: int | None = None) -> dict:
    db = str(work / f"{workload}-{mode}-{latency}-{uuid.uuid4().hex[:6]}.duckdb")
    prepare_db(db)
    env = dict(os.environ)
    if ep is None:
        queue = "memory"
    else:
        queue = ep.fill(bodies)
        ep.control("Configure", latency_ms=latency, reset_stats=True)
        env.update({"AWS_ENDPOINT_URL": ep.url, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
        endpoint_cpu0 = _cpu_seconds(ep.proc.pid)
    cmd = [sys.executable, "-m", "bench.drain_latency", "--consumer", "--workload", workload, "--mode", mode,
           "--queue", queue, "--db", db, "--n", str(len(bodies)), *common]
    if receivers:
        cmd += ["--receivers", str(receivers)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"consumer failed ({workload} {mode} {latency} ms):\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    n = out["received"]
    point = {"workload": workload, "mode": mode, "latency_ms": latency, "messages": n,
             "per_s": round(n / out["seconds"], 1), **out}
    point["sqs_calls_per_message"] = round(out["sqs_calls"] / max(n, 1), 4)
    if ep is not None:
        stats = ep.control("Stats")
        calls = {k: v for k, v in stats["calls"].items() if k in
                 ("ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch")}
        point["endpoint_calls"] = stats["calls"]
        point["endpoint_calls_per_message"] = round(sum(calls.values()) / max(n, 1), 4)
        point["endpoint_received_again"] = stats["received_again"]
        point["endpoint_cpu_seconds"] = round(_cpu_seconds(ep.proc.pid) - endpoint_cpu0, 2)
        left = ep.sqs.get_queue_attributes(QueueUrl=ep.sqs.get_queue_url(QueueName=queue)["QueueUrl"],
                                           AttributeNames=["All"])["Attributes"]
        point["left_on_queue"] = int(left["ApproximateNumberOfMessages"]) + int(left["ApproximateNumberOfMessagesNotVisible"])
    point["db"] = db_counts(db, workload)
    os.remove(db)
    return point


def db_counts(path: str, workload: str) -> dict:
    from pipelines.query import read_only

    with read_only(path, wait_seconds=60) as (c, _):
        q = c.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        if workload == "ses":
            return {"events": c.execute("SELECT count(*) FROM email_events").fetchone()[0], "quarantined": q}
        return {"ledger_rows": c.execute("SELECT count(*) FROM email_messages").fetchone()[0], "quarantined": q}


def client_cost(ep: Endpoint, bodies: list[str], calls: int = 300) -> dict:
    """CPU of the consumer's side of one SQS call through boto3 (no latency, one thread): the part
    of the SQS cost a faster network does not remove."""
    from resources.aws import SQSQueueResource

    name = ep.fill((bodies * (calls * 10 // max(len(bodies), 1) + 1))[:calls * 10])
    ep.control("Configure", latency_ms=0)
    env = {"AWS_ENDPOINT_URL": ep.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        queue = SQSQueueResource(queue_name=name, region_name="us-east-1")
        queue.visibility_timeout()
        handles: list[str] = []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(calls):
            handles += [m["ReceiptHandle"] for m in queue.receive(10, wait_seconds=0)]
        receive_cpu, receive_wall = time.process_time() - cpu0, time.perf_counter() - wall0
        cpu0 = time.process_time()
        queue.delete(handles)
        delete_cpu = time.process_time() - cpu0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {"calls": calls, "message_bytes": round(statistics.mean(len(b) for b in bodies)),
            "receive_cpu_ms": round(receive_cpu / calls * 1e3, 3), "receive_wall_ms": round(receive_wall / calls * 1e3, 3),
            "delete_cpu_ms": round(delete_cpu / (len(handles) / 10) * 1e3, 3),
            "cpu_us_per_message": round((receive_cpu + delete_cpu) / len(handles) * 1e6, 1)}


def median_point(points: list[dict]) -> dict:
    best = sorted(points, key=lambda p: p["per_s"])[len(points) // 2]
    return {**best, "runs_per_s": [p["per_s"] for p in points]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latencies", default="0,10,20,50", help="round trips in ms")
    ap.add_argument("--workloads", default="ses,email")
    ap.add_argument("--ses-n", type=int, default=10_000)
    ap.add_argument("--email-n", type=int, default=5_000)
    ap.add_argument("--baseline-n", type=int, default=2_000, help="messages per sequential point (it is slow)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per concurrent point and in process (median)")
    ap.add_argument("--sweep", default="", help="receivers to try at --sweep-latency for SES, e.g. 2,4,8,16,32")
    ap.add_argument("--sweep-latency", default="20", help="round trips (ms) for the sweep, e.g. 20,50")
    ap.add_argument("--out", default=str(RESULTS))
    # the consumer process
    ap.add_argument("--consumer", action="store_true")
    ap.add_argument("--workload")
    ap.add_argument("--mode")
    ap.add_argument("--queue")
    ap.add_argument("--db")
    ap.add_argument("--n", type=int)
    ap.add_argument("--receivers", type=int)
    ap.add_argument("--cert-dir")
    ap.add_argument("--bodies")
    ap.add_argument("--workers", type=int, default=-1)
    a, _ = ap.parse_known_args()   # `python -m bench` passes suite names along
    if a.consumer:
        if a.workers < 0:
            from pipelines.email_delivery.parallel import auto_workers
            a.workers = auto_workers()
        consumer_main(a)
        return

    latencies = [float(x) for x in a.latencies.split(",") if x]
    work = Path(tempfile.mkdtemp(prefix="bench-drain-"))
    results: dict = {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                     "targets": TARGETS, "visibility_timeout": VISIBILITY_TIMEOUT, "points": []}
    ep = Endpoint()
    try:
        for workload in a.workloads.split(","):
            bodies, prepare_db, common = dataset(workload, a, work)
            base_bodies = bodies[:a.baseline_n]
            results[workload] = res = {"n": len(bodies), "baseline_n": len(base_bodies), "latency": {}}
            res["boto3_client_cost"] = client_cost(ep, bodies)
            print(f"{workload} boto3 client cost: {res['boto3_client_cost']}", flush=True)
            runs = [run_point(None, workload, "concurrent", None, bodies, work, prepare_db, common)
                    for _ in range(a.repeat)]
            res["in_process"] = median_point(runs)
            print(f"{workload} in process: {res['in_process']['per_s']:,}/s {res['in_process']['runs_per_s']}", flush=True)
            if workload == "ses" and a.sweep:
                res["receivers_sweep"] = {}
                for lat in [float(x) for x in str(a.sweep_latency).split(",")]:
                    for r in [int(x) for x in a.sweep.split(",")]:
                        p = median_point([run_point(ep, workload, "concurrent", lat, bodies, work, prepare_db, common, r)
                                          for _ in range(a.repeat)])
                        res["receivers_sweep"][f"{lat:g} ms, {r} receivers"] = p
                        print(f"  sweep {lat:g} ms, {r} receivers: {p['per_s']:,}/s {p['runs_per_s']}", flush=True)
            for lat in latencies:
                conc = median_point([run_point(ep, workload, "concurrent", lat, bodies, work, prepare_db, common)
                                     for _ in range(a.repeat)])
                seq = run_point(ep, workload, "sequential", lat, base_bodies, work, prepare_db, common)
                res["latency"][f"{lat:g}"] = {
                    "concurrent": conc, "sequential": seq,
                    "speedup_vs_sequential": round(conc["per_s"] / seq["per_s"], 1),
                    "share_of_in_process": round(conc["per_s"] / res["in_process"]["per_s"], 3)}
                print(f"{workload} {lat:g} ms: concurrent {conc['per_s']:,}/s {conc['runs_per_s']}, "
                      f"sequential {seq['per_s']:,}/s, again {conc['endpoint_received_again']}", flush=True)
                write_results(results, Path(a.out))
    finally:
        ep.close()
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["checks"] = checks(results)
    write_results(results, Path(a.out))
    print_rows(results)
    print(f"checks: {results['checks']}\nwritten to {a.out}")


def dataset(workload: str, a, work: Path):
    if workload == "ses":
        from devstack.sns_signer import generate_signing_identity

        from bench.ses_ingest import make_dataset, setup_db

        identity = generate_signing_identity()
        cert_dir = work / "certs"
        cert_dir.mkdir(exist_ok=True)
        (cert_dir / identity.cert_name).write_bytes(identity.cert_pem)
        bodies, messages, _ = make_dataset(a.ses_n, 4, identity)
        path = work / "ses-bodies.json"
        path.write_text(json.dumps(bodies))
        return bodies, (lambda db: setup_db(db, messages)), ["--cert-dir", str(cert_dir), "--bodies", str(path)]
    from bench.email_dispatch import request_stream

    def prepare(db: str) -> None:
        from pipelines.schema import create
        create(db)

    return list(request_stream(a.email_n, prefix="d")), prepare, []


def checks(results: dict) -> dict:
    out = {}
    lat = f"{TARGETS['latency_ms']:g}"
    ses = results.get("ses", {}).get("latency", {}).get(lat)
    if ses:
        out["ses_share_of_in_process_at_20ms"] = ses["share_of_in_process"] >= TARGETS["ses_share_of_in_process_min"]
        out["ses_speedup_vs_sequential_at_20ms"] = ses["speedup_vs_sequential"] >= TARGETS["speedup_vs_sequential_min"]
    points = [p for w in ("ses", "email") for v in results.get(w, {}).get("latency", {}).values()
              for p in (v["concurrent"], v["sequential"])]
    out["nothing_received_twice"] = all(p["endpoint_received_again"] == 0 for p in points)
    out["sqs_calls_per_message"] = all(p["endpoint_calls_per_message"] <= TARGETS["sqs_calls_per_message_max"]
                                       for p in points)
    out["queues_emptied"] = all(p["left_on_queue"] == 0 for p in points)
    for w in ("ses", "email"):
        if w in results:
            ref = results[w]["in_process"]["db"]
            out[f"{w}_same_rows_as_in_process"] = all(v["concurrent"]["db"] == ref
                                                      for v in results[w]["latency"].values())
    return out


def print_rows(results: dict) -> None:
    rows = []
    for w in ("ses", "email"):
        if w not in results:
            continue
        r = results[w]
        rows.append((f"{w}: in process (no SQS)", f"{r['in_process']['per_s']:,.0f} /s", ""))
        for lat, v in r["latency"].items():
            c, s = v["concurrent"], v["sequential"]
            rows.append((f"{w}: {lat} ms, concurrent / sequential",
                         f"{c['per_s']:,.0f} / {s['per_s']:,.0f} /s", f"x{v['speedup_vs_sequential']}"))
            rows.append((f"  share of in process; calls/msg; again; RSS",
                         f"{v['share_of_in_process']:.0%}; {c['endpoint_calls_per_message']}; "
                         f"{c['endpoint_received_again']}; {c['peak_rss_mb']:.0f} MB", ""))
    print_table(rows)


if __name__ == "__main__":
    main()
