"""Dispatch scale-out on PostgreSQL: `python -m bench.email_dispatch_scale [--procs 1,2,4,8]
[--requests-per-proc 1000] [--latency-ms 50] [--repeat 1]`.

K send drains, each in its own process, share one queue and one PostgreSQL database. Each runs
what the drain op runs: `run_consumer` with the email-requests consumer (parse, render, skip
rules, claim, send, record), the op's default drain options (SendEmailBatchConfig: batches of 200,
8 receivers, 8 deleters, visibility extension) and its default 8 sending threads, an
SQSQueueResource with its real boto3 client, and the SMTP transport. The queue is
bench/sqs_endpoint.py in its own process (moto's cost grows with the queue's length and it is
not safe under concurrent receives). The SMTP sink runs in this process with a latency: every
DATA reply is held `--latency-ms`, so a send takes that long and one drain is bound by its
threads (8 / 50 ms = 160 emails/s at most), which is what adding processes should multiply.

Per point: a fresh migrated database (dropped after), K × requests-per-proc requests (mixed
kinds, 1-3 recipients, as bench/email_dispatch.py) on a fresh queue, the K processes started and
ready (imports, templates, pool, SQS client, one email of each kind built) before one start
signal. emails/s = emails sent /
(last arrival at the sink - start signal). Then the check: every recipient the ledger says was
sent arrived at the sink exactly once, nothing else arrived, no row is left pending, and the
processes' own counts add up to the ledger's.

Results: bench/results/email_dispatch_scale.json and a printed table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from bench.report import print_table, write_results

RESULTS = Path(__file__).parent / "results" / "email_dispatch_scale.json"
SENDER = "noreply@mailroom.test"
TARGETS = {"speedup_2_min": 1.8, "speedup_4_min": 3.4}


def worker(args: dict, ready, go, results) -> None:
    """One send drain, as the op runs it, against the shared queue and database."""
    try:
        from pipelines.common.consumer import run_consumer
        from pipelines.email.builder import Builder
        from pipelines.email.consumer import EmailRequestConsumer
        from pipelines.email_delivery.ingest import relink_orphans   # the code location's hook
        from pipelines.email.jobs import SendEmailBatchConfig, threads_for
        from pipelines.email.sending import RetryPolicy, Sender
        from pipelines.store.postgres import PostgresDatabase
        from pipelines.store.store import Store
        from resources.aws import SQSQueueResource
        from resources.smtp import SMTPSenderResource

        config = SendEmailBatchConfig()
        options = replace(config.drain_options(), max_messages=10**9, max_seconds=600.0)
        queue = SQSQueueResource(queue_name=args["queue"], region_name="us-east-1", endpoint_url=args["sqs_url"],
                                 aws_access_key_id="testing", aws_secret_access_key="testing")
        queue.visibility_timeout()   # the client and the URL, before the start (the op does it too)
        db = PostgresDatabase(args["db_url"])
        transport = SMTPSenderResource(host="127.0.0.1", port=args["smtp_port"])
        sender = Sender(transport, concurrency=threads_for(None, config.concurrency),
                        policy=RetryPolicy(max_attempts=config.max_attempts))
        builder = Builder()
        warm(builder)
        with EmailRequestConsumer(builder, sender, default_sender=SENDER, transport_name="smtp",
                                  inflight_window=config.inflight_window, keep_send_seconds=True,
                                  on_recorded=relink_orphans) as consumer, \
                Store(db.connect) as store:
            ready.release()
            go.wait()
            began = time.time()
            report = run_consumer(queue, consumer, store, options)
            ended = time.time()
            sends = sorted(consumer.send_seconds)
        db.close()
        results.put({"pid": os.getpid(), "began": began, "ended": ended, "sent": report.counters["sent"],
                     "failed": report.counters["failed"], "received": report.counters["received"],
                     "recipients": report.counters["recipients"],
                     "received_again": report.counters["received_again"],
                     "batches": report.counters["batches"], "threads": sender.concurrency,
                     "send_p50_ms": round(sends[len(sends) // 2] * 1e3, 1) if sends else None,
                     # share of the run the sending threads spent in transport calls
                     "senders_busy": round(sum(sends) / (sender.concurrency * (ended - began)), 3)})
    except BaseException as exc:  # noqa: BLE001 - reported to the driver, which fails the point
        ready.release()
        results.put({"pid": os.getpid(), "error": f"{type(exc).__name__}: {exc}"})
        raise


def warm(builder) -> None:
    """Build one email of each kind: the builder's per-kind skeleton (templates rendered and CSS
    inlined once) is made before the start signal, as in a drain that has run a while."""
    from bench.samples import sample_context
    from pipelines.email.catalogue import catalogue
    from pipelines.email.request import EmailRequest, Recipient

    for spec in catalogue().values():
        request = EmailRequest("warm", spec.kind, (Recipient("warm@example.org", True),), sample_context(spec))
        builder.build(request, request.recipients[0], SENDER)


def ledger_counts(url: str) -> dict:
    from pipelines.store.postgres import PostgresDatabase
    from pipelines.store.store import Store

    with PostgresDatabase(url) as db, Store(db.connect).read() as c:
        sent = [a for (a,) in c.execute("SELECT lower(to_address) FROM email_messages WHERE status = 'sent'")
                .fetchall()]
        by_status = dict(c.execute("SELECT status, count(*) FROM email_messages GROUP BY status").fetchall())
    return {"sent": sent, "by_status": by_status}


def exactly_once(sent_rows: list[str], sunk: Counter, reported_sent: int) -> dict:
    """Every recipient the ledger says was sent arrived once at the sink, and nothing else did."""
    rows = set(sent_rows)
    out = {"sent_rows": len(sent_rows), "sent_reported_by_processes": reported_sent,
           "sink_messages": sum(sunk.values()), "sink_recipients_distinct": len(sunk),
           "recipients_received_more_than_once": sum(1 for n in sunk.values() if n > 1),
           "sent_but_not_at_sink": len(rows - set(sunk)), "at_sink_but_not_sent": len(set(sunk) - rows)}
    out["ok"] = (len(rows) == len(sent_rows) == reported_sent == out["sink_messages"] == len(sunk)
                 and not out["recipients_received_more_than_once"] and not out["sent_but_not_at_sink"]
                 and not out["at_sink_but_not_sent"])
    return out


def run_point(k: int, n_requests: int, ep, smtp_port: int, reader) -> dict:
    from bench.email_dispatch import request_stream, seed_suppressed
    from bench.pg_database import migrated_database
    from pipelines.store.postgres import PostgresDatabase

    reader.clear()
    ctx = mp.get_context("spawn")
    prefix = f"k{k}-{int(time.time())}"
    with migrated_database() as url:
        with PostgresDatabase(url) as db:
            seed_suppressed(db)
        queue = ep.fill(list(request_stream(n_requests, prefix=prefix)))
        ready, go, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
        args = {"queue": queue, "sqs_url": ep.url, "db_url": url, "smtp_port": smtp_port}
        procs = [ctx.Process(target=worker, args=(args, ready, go, results), name=f"drain-{i}") for i in range(k)]
        for p in procs:
            p.start()
        for _ in procs:
            ready.acquire()
        start = time.time()
        go.set()
        done = [results.get(timeout=900) for _ in procs]
        for p in procs:
            p.join(60)
        errors = [d["error"] for d in done if "error" in d]
        if errors:
            raise RuntimeError(f"{len(errors)} drain process(es) failed: {errors[0]}")
        ledger = ledger_counts(url)
    arrivals = sorted(e["received_at"] for e in reader.envelopes())
    sunk = Counter(r.lower() for e in reader.envelopes() for r in e["rcpt_tos"])
    sent = sum(d["sent"] for d in done)
    span = arrivals[-1] - start if arrivals else float("nan")
    return {"processes": k, "requests": n_requests, "recipients": sum(d["recipients"] for d in done),
            "sent": sent, "failed": sum(d["failed"] for d in done),
            "seconds_to_last_send": round(span, 3), "emails_per_s": round(sent / span, 1),
            "seconds_to_last_exit": round(max(d["ended"] for d in done) - start, 3),
            "sent_per_process": sorted((d["sent"] for d in done), reverse=True),
            "received_again": sum(d["received_again"] for d in done),
            "send_p50_ms": [d["send_p50_ms"] for d in done], "senders_busy": [d["senders_busy"] for d in done],
            "ledger_by_status": ledger["by_status"],
            "exactly_once": exactly_once(ledger["sent"], sunk, sent),
            "load_avg_1m_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", default="1,2,4,8", help="process counts to measure")
    ap.add_argument("--requests-per-proc", type=int, default=1000,
                    help="requests per drain process (~1.9 emails each); the queue holds K times this")
    ap.add_argument("--latency-ms", type=float, default=50.0, help="the SMTP sink's hold per DATA reply")
    ap.add_argument("--repeat", type=int, default=1, help="runs per point (the median is reported)")
    ap.add_argument("--out", default=str(RESULTS))
    a, _ = ap.parse_known_args()
    procs = [int(x) for x in a.procs.split(",") if x]

    from bench.drain_latency import Endpoint
    from devstack.smtp_sink import SinkReader, SmtpSink
    from devstack.stack import free_port

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    ep = Endpoint()
    sink = SmtpSink(tmp / "sink", free_port(), latency=a.latency_ms / 1000)
    sink.start()
    reader = SinkReader(tmp / "sink")
    results = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "targets": TARGETS,
               "latency_ms": a.latency_ms, "requests_per_proc": a.requests_per_proc, "points": {}}
    try:
        for k in procs:
            runs = []
            for r in range(a.repeat):
                print(f"{k} process(es), run {r + 1} ...", flush=True)
                runs.append(run_point(k, a.requests_per_proc * k, ep, sink.controller.port, reader))
                print(f"  {runs[-1]['emails_per_s']} emails/s, exactly once: {runs[-1]['exactly_once']['ok']}",
                      flush=True)
            median = statistics.median(x["emails_per_s"] for x in runs)
            results["points"][str(k)] = {"emails_per_s_median": median, "runs": runs}
            write_results(results, Path(a.out))
    finally:
        sink.stop()
        ep.close()
    one = results["points"].get("1", {}).get("emails_per_s_median")
    if one:
        results["speedup_vs_1"] = {k: round(p["emails_per_s_median"] / one, 2) for k, p in results["points"].items()}
    results["exactly_once_all"] = all(r["exactly_once"]["ok"] for p in results["points"].values() for r in p["runs"])
    write_results(results, Path(a.out))
    rows = []
    for k, p in results["points"].items():
        target = {"2": f">= {TARGETS['speedup_2_min']}x", "4": f">= {TARGETS['speedup_4_min']}x"}.get(k, "")
        rows.append((f"{k} process(es): emails/s (median of {len(p['runs'])}); x one process",
                     f"{p['emails_per_s_median']}; {results.get('speedup_vs_1', {}).get(k)}x", target))
    rows.append(("every recipient sent exactly once, across the processes", results["exactly_once_all"], "True"))
    print_table(rows)
    print(f"\nresults: {a.out}")


if __name__ == "__main__":
    main()
