"""Stripe event ingestion benchmark: `python -m bench.stripe_ingest [--n 50000] [--sqs-n N]`.

Data (bench/stripe_samples.py): organisations signing up through Checkout, renewals (15% failing
first, then recovered), quantity changes, refunds, disputes, cancellations; every event in the
pinned API version, in an EventBridge envelope, each object's events in order, 5% delivered
twice. Generated lazily inside the consumer process, so its memory is the consumer's own.

1. in process: a consumer process drains an in-memory queue with run_consumer (the drain op's
   entry, its batch size), into a fresh DuckDB file;
2. baseline, same run, Warehouse-style: one event per transaction (the same consumer given one
   message at a time, each committed alone), on a sample;
3. from the local SQS (moto, started here): a producer keeps a backlog of 100 on a queue while a
   consumer process drains it with run_consumer.
Reported: events/s, SQS calls per event, Stripe API calls per event (re-retrieves; a counting
client that has no objects, so any call would also show as a quarantined event), peak RSS.

Results: bench/results/stripe_ingest.json and a printed table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.report import print_table, write_results
from bench.sqs_feed import feeding, moto_queue

RESULTS = Path(__file__).parent / "results" / "stripe_ingest.json"
TARGETS = {"sqs_calls_per_event_max": 0.25, "speedup_vs_baseline_min": 10.0,
           "stripe_calls_per_event_in_order_max": 0.05, "peak_rss_mb_max": 500}


def bodies(n: int, seed: int = 11) -> Iterator[str]:
    """n queue bodies: lifecycles one organisation after another, 5% delivered twice."""
    from bench import stripe_samples as s

    rng = random.Random(seed)
    made = 0
    org = 0
    while True:
        for event in sorted(s.lifecycle(org, rng, renewals=3), key=lambda e: e["created"]):
            body = s.eventbridge_body(event)
            for _ in range(2 if rng.random() < 0.05 else 1):
                if made >= n:
                    return
                yield body
                made += 1
        org += 1


class CountingStripe:
    """Stands in for Stripe in the benchmark: counts re-retrieve calls and has no objects."""

    def __init__(self):
        self.calls = 0

    def __call__(self, object_type: str, object_id: str):
        self.calls += 1
        return None


def _proc_mb(pid: int | str, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """VmHWM (ru_maxrss carries the parent's peak over fork+exec)."""
    return _proc_mb("self", "VmHWM:") or 0.0


def consumer(source: str):
    from pipelines.billing.consumer import StripeEventConsumer
    from pipelines.billing.envelope import EnvelopeSettings
    from pipelines.billing.ingest import IngestSettings
    from bench.stripe_samples import SOURCE

    stripe = CountingStripe()
    settings = IngestSettings(EnvelopeSettings.from_strings(SOURCE, None), billing_service="pypi", domain="pypi.org")
    return StripeEventConsumer(settings, stripe), stripe


def consumer_main(args) -> None:
    """Child process: drain into a fresh DuckDB through run_consumer; print one JSON line."""
    from bench.memory_queue import MemoryQueue
    from pipelines.billing.jobs import DrainConfig
    from pipelines.common.consumer import process_batch, run_consumer
    from pipelines.common.drain import DrainOptions
    from pipelines.common.queue_message import QueueMessage
    from pipelines.schema import database
    from pipelines.store.store import Store

    db = database(args.db)
    rss_after_imports = peak_rss_mb()
    cons, stripe = consumer("bench")
    batch = args.batch or DrainConfig().batch_size
    with Store(lambda: db.connect(config={"threads": 1}), hold_seconds=10.0) as store:
        cpu = time.process_time()
        started = time.perf_counter()
        if args.consumer == "memory":
            report = run_consumer(MemoryQueue(bodies(args.n)), cons, store,
                                  DrainOptions(max_messages=args.n, batch_size=batch, wait_seconds=0))
            counters, seconds = report.counters.as_metadata(), report.seconds
        elif args.consumer == "baseline":  # Warehouse-style: each event in its own transaction
            counters: dict = {}
            for i, body in enumerate(bodies(args.n)):
                c = process_batch(store, cons, [QueueMessage(f"b{i}", f"rh{i}", body)])
                for k, v in c.items():
                    counters[k] = counters.get(k, 0) + v
            counters["received"] = args.n
            seconds = time.perf_counter() - started
        else:
            from resources.aws import SQSQueueResource

            queue = SQSQueueResource(queue_name=args.queue, region_name="us-east-1")
            # batch 200, not the op's 1,000: moto scans every in-flight message on each call
            report = run_consumer(queue, cons, store, DrainOptions(
                max_messages=args.n, max_seconds=args.sqs_max_seconds, batch_size=200, wait_seconds=2,
                empty_polls_to_stop=3))
            counters, seconds = report.counters.as_metadata(), report.seconds
        cpu = time.process_time() - cpu
    with Store(db.connect).read() as conn:
        stored = dict(conn.execute("SELECT outcome, count(*) FROM stripe_events GROUP BY ALL").fetchall())
        tables = table_digests(conn)
    print(json.dumps({**counters, "seconds": seconds, "cpu_seconds": cpu, "stripe_api_calls": stripe.calls,
                      "peak_rss_mb": peak_rss_mb(), "rss_after_imports_mb": rss_after_imports,
                      "db": {"events": stored, "tables": tables}}))


DIGESTED = ["stripe_customers", "stripe_subscriptions", "stripe_subscription_items", "stripe_products",
            "stripe_prices", "stripe_invoices", "stripe_payment_methods", "stripe_payments", "stripe_object_watermarks"]


def table_digests(conn) -> dict[str, list]:
    """Rows and a content hash per table (without when rows were written). The ledger's outcome
    split is left out: which copies are `stale` (superseded within their batch) depends on the
    batch size, the resulting tables do not."""
    out = {}
    for table in DIGESTED:
        cols = [r[0] for r in conn.execute(f"DESCRIBE {table}").fetchall() if r[0] not in ("updated_at", "retrieved_at")]
        rows, digest = conn.execute(f"SELECT count(*), sum(hash({', '.join(cols)})) FROM {table}").fetchone()
        out[table] = [rows, str(digest)]
    return out


def run_child(kind: str, n: int, db: str, extra: list[str] | None = None, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bench.stripe_ingest", "--consumer", kind, "--n", str(n),
                           "--db", db, *(extra or [])], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    received = out.get("received", n)
    out["per_s"] = round(received / out["seconds"])
    out["stripe_calls_per_event"] = round(out["stripe_api_calls"] / received, 4)
    out["per_cpu_s"] = round(received / out["cpu_seconds"])
    return out


def run_sqs(n: int, db: str, endpoint: str, max_seconds: float) -> dict:
    sqs, name, url, env = moto_queue(endpoint, "bench-stripe")
    with feeding(sqs, url, bodies(n)):
        out = run_child("sqs", n, db, ["--queue", name, "--sqs-max-seconds", str(max_seconds)], env)
    calls = out["receive_calls"] + out["delete_calls"]
    out.update(sqs_calls=calls, sqs_calls_per_event=round(calls / max(out["received"], 1), 4))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--baseline-n", type=int, default=3_000)
    ap.add_argument("--sqs-n", type=int, default=0, help="events through moto's SQS (0: all n)")
    ap.add_argument("--sqs-max-seconds", type=float, default=7200)
    ap.add_argument("--skip-sqs", action="store_true")
    ap.add_argument("--batch", type=int, default=0, help="events per commit; 0 = the drain op's batch_size")
    ap.add_argument("--consumer", choices=["memory", "baseline", "sqs"])
    ap.add_argument("--queue")
    ap.add_argument("--db")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.consumer:
        consumer_main(args)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-stripe-"))
    results: dict = {"n": args.n, "cpus": os.cpu_count(), "targets": TARGETS,
                     "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    results["in_process"] = run_child("memory", args.n, str(work / "memory.duckdb"),
                                      ["--batch", str(args.batch)] if args.batch else None)
    print(f"in process: {results['in_process']['per_s']:,} events/s, "
          f"{results['in_process']['stripe_calls_per_event']} Stripe calls/event, "
          f"peak RSS {results['in_process']['peak_rss_mb']:.0f} MB", flush=True)
    results["baseline"] = run_child("baseline", args.baseline_n, str(work / "baseline.duckdb"))
    print(f"baseline (one event per transaction): {results['baseline']['per_s']:,} events/s", flush=True)
    results["speedup_vs_baseline"] = round(results["in_process"]["per_s"] / results["baseline"]["per_s"], 1)
    results["speedup_vs_baseline_cpu"] = round(results["in_process"]["per_cpu_s"] / results["baseline"]["per_cpu_s"], 1)

    if not args.skip_sqs:
        from devstack.stack import config_from_env, down, up

        state_dir = work / "stack"
        state, _ = up(config_from_env({"DEVSTACK_MOTO_PORT": "0", "DEVSTACK_SMTP_PORT": "0",
                                       "DEVSTACK_STRIPE_PORT": "0", "DEVSTACK_MAIL_PORT": "0"}, state_dir=state_dir, watch_pid=os.getpid()))
        try:
            results["sqs_end_to_end"] = run_sqs(args.sqs_n or args.n, str(work / "sqs.duckdb"), state.endpoint,
                                                args.sqs_max_seconds)
        finally:
            down(state_dir)
        e2e = results["sqs_end_to_end"]
        print(f"from SQS: {e2e['per_s']:,} events/s, {e2e['sqs_calls_per_event']} SQS calls/event, "
              f"peak RSS {e2e['peak_rss_mb']:.0f} MB", flush=True)

    inp, e2e = results["in_process"], results.get("sqs_end_to_end")
    results["checks"] = {
        "speedup_vs_baseline": results["speedup_vs_baseline"] >= TARGETS["speedup_vs_baseline_min"],
        "stripe_calls_per_event_in_order": inp["stripe_calls_per_event"] <= TARGETS["stripe_calls_per_event_in_order_max"],
        "in_process_peak_rss": inp["peak_rss_mb"] < TARGETS["peak_rss_mb_max"],
        "nothing_quarantined": inp.get("quarantined", 0) == 0,
    }
    if e2e:
        results["checks"].update({
            "sqs_calls_per_event": e2e["sqs_calls_per_event"] <= TARGETS["sqs_calls_per_event_max"],
            "sqs_peak_rss": e2e["peak_rss_mb"] < TARGETS["peak_rss_mb_max"],
            "sqs_same_tables_as_in_process": e2e["db"]["tables"] == inp["db"]["tables"] if not args.sqs_n else None,
        })
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    write_results(results, out)
    rows = [("in process (run_consumer, op batch size)", f"{inp['per_s']:,} /s", ""),
            ("baseline (Warehouse-style, 1 txn each)", f"{results['baseline']['per_s']:,} /s", ""),
            ("speedup vs baseline", f"{results['speedup_vs_baseline']}x", f">= {TARGETS['speedup_vs_baseline_min']}x"),
            ("in process, per CPU-second", f"{inp['per_cpu_s']:,} /s", ""),
            ("baseline, per CPU-second", f"{results['baseline']['per_cpu_s']:,} /s", ""),
            ("speedup vs baseline, CPU", f"{results['speedup_vs_baseline_cpu']}x", ""),
            ("Stripe API calls per event, in order", f"{inp['stripe_calls_per_event']}",
             f"<= {TARGETS['stripe_calls_per_event_in_order_max']}"),
            ("in-process consumer peak RSS", f"{inp['peak_rss_mb']:.0f} MB", f"< {TARGETS['peak_rss_mb_max']} MB")]
    if e2e:
        rows += [("from SQS (moto)", f"{e2e['per_s']:,} /s", ""),
                 ("SQS calls per event", f"{e2e['sqs_calls_per_event']}", f"<= {TARGETS['sqs_calls_per_event_max']}"),
                 ("Stripe API calls per event, from SQS", f"{e2e['stripe_calls_per_event']}", ""),
                 ("SQS consumer peak RSS", f"{e2e['peak_rss_mb']:.0f} MB", f"< {TARGETS['peak_rss_mb_max']} MB")]
    print_table(rows)
    print(f"checks: {results['checks']}\nwritten to {out}")


if __name__ == "__main__":
    main()
