"""Stripe event ingestion benchmark: `python -m bench.stripe_ingest [--n 50000] [--sqs-n N] [--store postgres]`.

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

`--store postgres` runs the same three on PostgreSQL (`--pg-url`, default the local server): the
bench creates a fresh migrated database for each run (mailroom_bench_<epoch>_<random>) and drops it
after; the consumers are the same, their store a `PostgresDatabase`.

Results: bench/results/stripe_ingest.json (stripe_ingest_postgres.json) and a printed table.
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
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.report import print_table, write_results
from bench.sqs_feed import feeding, moto_queue

RESULTS = Path(__file__).parent / "results" / "stripe_ingest.json"
RESULTS_POSTGRES = Path(__file__).parent / "results" / "stripe_ingest_postgres.json"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGETS = {"sqs_calls_per_event_max": 0.25, "speedup_vs_baseline_min": 10.0,
           "stripe_calls_per_event_in_order_max": 0.05, "peak_rss_mb_max": 500}


def bodies(n: int, seed: int = 11, part: tuple[int, int] | None = None) -> Iterator[str]:
    """n queue bodies: lifecycles one organisation after another, 5% delivered twice. `part` (k, N):
    only the organisations whose number is k modulo N (one of N concurrent drains' shares; the N
    shares together are the n bodies)."""
    from bench import stripe_samples as s

    rng = random.Random(seed)
    made = 0
    org = 0
    while True:
        mine = part is None or org % part[1] == part[0]
        for event in sorted(s.lifecycle(org, rng, renewals=3), key=lambda e: e["created"]):
            body = s.eventbridge_body(event)
            for _ in range(2 if rng.random() < 0.05 else 1):
                if made >= n:
                    return
                if mine:
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
    """Child process: drain into a fresh DuckDB file or PostgreSQL database through run_consumer;
    print one JSON line."""
    from bench.memory_queue import MemoryQueue
    from pipelines.billing.jobs import DrainConfig
    from pipelines.common.consumer import process_batch, run_consumer
    from pipelines.common.drain import DrainOptions
    from pipelines.common.queue_message import QueueMessage
    from pipelines.store.store import Store

    db = open_database(args.db)
    rss_after_imports = peak_rss_mb()
    cons, stripe = consumer("bench")
    batch = args.batch or DrainConfig().batch_size
    with Store(lambda: db.connect(config={"threads": 1}), hold_seconds=10.0) as store:
        cpu = time.process_time()
        started = time.perf_counter()
        wall_started = time.time()
        if args.consumer == "memory":
            part = tuple(int(x) for x in args.part.split("/")) if args.part else None
            report = run_consumer(MemoryQueue(bodies(args.n, part=part)), cons, store,
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
        wall_ended = time.time()
    with Store(db.connect).read() as conn:
        stored = dict(conn.execute("SELECT outcome, count(*) FROM stripe_events GROUP BY outcome").fetchall())
        tables = table_digests(conn)
    if hasattr(db, "close"):
        db.close()
    print(json.dumps({**counters, "seconds": seconds, "cpu_seconds": cpu, "stripe_api_calls": stripe.calls,
                      "peak_rss_mb": peak_rss_mb(), "rss_after_imports_mb": rss_after_imports,
                      "started_at": wall_started, "ended_at": wall_ended,
                      "db": {"events": stored, "tables": tables}}))


DIGESTED = ["stripe_customers", "stripe_subscriptions", "stripe_subscription_items", "stripe_products",
            "stripe_prices", "stripe_invoices", "stripe_payment_methods", "stripe_payments", "stripe_object_watermarks"]


def table_digests(conn) -> dict[str, list]:
    """Rows and a content hash per table (without when rows were written). The ledger's outcome
    split is left out: which copies are `stale` (superseded within their batch) depends on the
    batch size, the resulting tables do not. (The hash is the engine's own: comparable between
    runs on one engine.)"""
    from pipelines.store.dialect import DUCKDB, column_types, dialect_of

    out = {}
    for table in DIGESTED:
        cols = [c for c in column_types(conn, table) if c not in ("updated_at", "retrieved_at")]
        if dialect_of(conn) is DUCKDB:
            sql = f"SELECT count(*), sum(hash({', '.join(cols)})) FROM {table}"
        else:
            sql = (f"SELECT count(*), md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) "
                   f"FROM (SELECT {', '.join(cols)} FROM {table}) r")
        rows, digest = conn.execute(sql).fetchone()
        out[table] = [rows, str(digest)]
    return out


def open_database(where: str):
    """The DuckDB resource for a file, or a PostgresDatabase for a postgresql:// URL."""
    if where.startswith("postgresql://"):
        from pipelines.store.postgres import PostgresDatabase

        return PostgresDatabase(where, max_size=2)
    from pipelines.schema import database

    return database(where)


@contextmanager
def fresh_postgres(admin_url: str, label: str) -> Iterator[str]:
    """A new database on the server of `admin_url` with every migration applied; dropped after."""
    import uuid

    import psycopg

    from pipelines.store import migrate

    name = f"mailroom_bench_{int(time.time())}_{label}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                migrate.migrate(conn)
            yield url
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _target(args, work: Path, label: str, stack: ExitStack) -> str:
    """Where one run writes: a fresh DuckDB file, or a fresh migrated PostgreSQL database."""
    if args.store == "postgres":
        return stack.enter_context(fresh_postgres(args.pg_url, label))
    return str(work / f"{label}.duckdb")


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


def run_concurrent(n: int, drains: int, db: str) -> dict:
    """`drains` consumer processes at once on one database, each draining its share of the n bodies
    (whole organisations: bodies(part=)). Events/s is n over the time from the first start to the
    last end; the tables are digested after all have ended."""
    procs = [subprocess.Popen([sys.executable, "-m", "bench.stripe_ingest", "--consumer", "memory", "--n", str(n),
                               "--db", db, "--part", f"{k}/{drains}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for k in range(drains)]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode:
            raise RuntimeError(stderr[-3000:])
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    seconds = max(o["ended_at"] for o in outs) - min(o["started_at"] for o in outs)
    received = sum(o["received"] for o in outs)
    db_handle = open_database(db)
    from pipelines.store.store import Store
    with Store(db_handle.connect).read() as conn:
        tables = table_digests(conn)
    if hasattr(db_handle, "close"):
        db_handle.close()
    # quarantined: events the drain's concurrent receivers delivered after a newer one of their
    # object (a late create/update is re-retrieved, and the benchmark's Stripe has no objects);
    # stripe_api_calls counts those re-retrieves
    keep = ("received", "events_new", "duplicates", "applied", "stale", "quarantined", "stripe_api_calls",
            "one_by_one", "internal_errors")
    return {"drains": drains, "received": received, "seconds": seconds, "per_s": round(received / seconds),
            "each": [{k: o.get(k, 0) for k in keep} | {"seconds": round(o["seconds"], 2),
                                                        "cpu_seconds": round(o["cpu_seconds"], 2)} for o in outs],
            "one_by_one": sum(o.get("one_by_one", 0) for o in outs),
            "quarantined": sum(o.get("quarantined", 0) for o in outs), "db": {"tables": tables}}


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
    ap.add_argument("--db", help="(a child run's) DuckDB file or postgresql:// URL")
    ap.add_argument("--store", choices=["duckdb", "postgres"], default="duckdb")
    ap.add_argument("--pg-url", default=PG_ADMIN_URL,
                    help="--store postgres: a database on the server where the bench may create and drop its own")
    ap.add_argument("--drains", type=int, default=0,
                    help="also run this many drains at once on one database, each a share of the n events")
    ap.add_argument("--part", help="(a child run's) share k/N of the events")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.consumer:
        consumer_main(args)
        return
    with ExitStack() as stack:
        bench(args, stack)


def bench(args, stack: ExitStack) -> None:
    out = Path(args.out or (RESULTS_POSTGRES if args.store == "postgres" else RESULTS))
    work = Path(tempfile.mkdtemp(prefix="bench-stripe-"))
    results: dict = {"n": args.n, "store": args.store, "cpus": os.cpu_count(), "targets": TARGETS,
                     "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    if args.store == "postgres":
        import psycopg

        with psycopg.connect(args.pg_url) as admin:
            results["postgres_version"] = admin.info.server_version
    results["in_process"] = run_child("memory", args.n, _target(args, work, "memory", stack),
                                      ["--batch", str(args.batch)] if args.batch else None)
    print(f"in process: {results['in_process']['per_s']:,} events/s, "
          f"{results['in_process']['stripe_calls_per_event']} Stripe calls/event, "
          f"peak RSS {results['in_process']['peak_rss_mb']:.0f} MB", flush=True)
    results["baseline"] = run_child("baseline", args.baseline_n, _target(args, work, "baseline", stack))
    print(f"baseline (one event per transaction): {results['baseline']['per_s']:,} events/s", flush=True)
    results["speedup_vs_baseline"] = round(results["in_process"]["per_s"] / results["baseline"]["per_s"], 1)
    results["speedup_vs_baseline_cpu"] = round(results["in_process"]["per_cpu_s"] / results["baseline"]["per_cpu_s"], 1)

    if args.drains:
        conc = results["concurrent"] = run_concurrent(args.n, args.drains, _target(args, work, "concurrent", stack))
        conc["same_tables_as_in_process"] = conc["db"]["tables"] == results["in_process"]["db"]["tables"]
        print(f"{args.drains} drains at once: {conc['per_s']:,} events/s, "
              f"same tables as one drain: {conc['same_tables_as_in_process']}", flush=True)

    if not args.skip_sqs:
        from devstack.stack import config_from_env, down, up

        state_dir = work / "stack"
        state, _ = up(config_from_env({"DEVSTACK_MOTO_PORT": "0", "DEVSTACK_SMTP_PORT": "0",
                                       "DEVSTACK_STRIPE_PORT": "0", "DEVSTACK_MAIL_PORT": "0"}, state_dir=state_dir, watch_pid=os.getpid()))
        try:
            results["sqs_end_to_end"] = run_sqs(args.sqs_n or args.n, _target(args, work, "sqs", stack),
                                                state.endpoint, args.sqs_max_seconds)
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
    if args.drains:
        results["checks"].update({
            "concurrent_same_tables_as_in_process": results["concurrent"]["same_tables_as_in_process"],
            "concurrent_no_batch_failed": results["concurrent"]["one_by_one"] == 0})
    if e2e:
        results["checks"].update({
            "sqs_calls_per_event": e2e["sqs_calls_per_event"] <= TARGETS["sqs_calls_per_event_max"],
            "sqs_peak_rss": e2e["peak_rss_mb"] < TARGETS["peak_rss_mb_max"],
            "sqs_same_tables_as_in_process": e2e["db"]["tables"] == inp["db"]["tables"] if not args.sqs_n else None,
        })
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
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
    if args.drains:
        rows += [(f"{args.drains} drains at once, one database", f"{results['concurrent']['per_s']:,} /s", "")]
    if e2e:
        rows += [("from SQS (moto)", f"{e2e['per_s']:,} /s", ""),
                 ("SQS calls per event", f"{e2e['sqs_calls_per_event']}", f"<= {TARGETS['sqs_calls_per_event_max']}"),
                 ("Stripe API calls per event, from SQS", f"{e2e['stripe_calls_per_event']}", ""),
                 ("SQS consumer peak RSS", f"{e2e['peak_rss_mb']:.0f} MB", f"< {TARGETS['peak_rss_mb_max']} MB")]
    print_table(rows)
    print(f"checks: {results['checks']}\nwritten to {out}")


if __name__ == "__main__":
    main()
