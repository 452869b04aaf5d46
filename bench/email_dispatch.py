"""Email dispatch benchmark: `python -m bench.email_dispatch [--requests 10000] [--memory-requests 100000]`.

Starts its own local stack (devstack API: moto + SMTP sink) in a temporary state dir. Each
phase runs in a fresh subprocess so its peak RSS is its own.

0. null      the pipeline below with a transport that accepts at once: our own ceiling.
   sink      the SMTP sink's own capacity: pre-built messages over smtplib, no pipeline.
1. smtp      N requests (mixed kinds, 1-3 recipients, ~5% unverified, ~1% without address, some
             suppressed) through run_consumer with the email-requests consumer, as the op runs it:
             parse, render, skip rules, claim, send, record - against the SMTP sink, real DuckDB
             file. Requests are generated lazily from an in-memory queue (streamed), not through SQS.
2. ses       the same against SES (SESv2 SendEmail raw MIME) on moto, no rate limit.
3. baseline  Warehouse-style, same run, same templates: one message at a time, Jinja render,
             premailer CSS inlining per message, email.message MIME, repeat-window lookup,
             send over one SMTP connection, then a single-row INSERT (autocommit); on a sample.
4. rate      2,000 emails with a configured send rate of 200/s to the SMTP sink: total time,
             and the largest count in any 1-second window (send starts, and sink arrival times).
5. memory    M requests streamed to the SMTP sink: peak RSS.

Results: bench/results/email_dispatch.json and a printed table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.report import print_table, write_results

RESULTS = Path(__file__).parent / "results" / "email_dispatch.json"
RESULTS_POSTGRES = Path(__file__).parent / "results" / "email_dispatch_postgres.json"
SENDER = "noreply@mailroom.test"
TARGETS = {"smtp_emails_per_s_min": 1000, "speedup_vs_baseline_min": 10.0, "rate": 200, "rate_emails": 2000,
           "rate_seconds": 10.0, "rate_tolerance": 0.05, "peak_rss_mb_max": 400}


# ---- workload ---------------------------------------------------------------------------------

def request_stream(n: int, seed: int = 7, prefix: str = "b") -> Iterator[str]:
    """n request bodies, mixed kinds, 1-3 recipients each, generated one at a time."""
    from bench.samples import sample_context
    from pipelines.email.catalogue import catalogue

    rnd = random.Random(seed)
    kinds = sorted(catalogue().values(), key=lambda k: k.kind)
    contexts = {k.kind: sample_context(k) for k in kinds}
    for i in range(n):
        spec = rnd.choice(kinds)
        recipients = []
        for j in range(rnd.randint(1, 3)):
            roll = rnd.random()
            addr = None if roll < 0.01 else (f"suppressed{rnd.randint(0, 49)}@example.org" if roll < 0.02
                                             else f"{prefix}{i}-{j}@example.org")
            recipients.append({"email": addr, "verified": rnd.random() > 0.05, "user_id": f"u{i}-{j}",
                               "name": f"User {i}-{j}", "acting_user": j == 0})
        ctx = dict(contexts[spec.kind])
        if "username" in ctx:
            ctx["username"] = f"user{i}"
        yield json.dumps({"request_id": f"{prefix}-{i}", "kind": spec.kind, "recipients": recipients,
                          "context": ctx, "remote_ip": "203.0.113.7"})


def open_database(where: str, store: str = "duckdb"):
    """The ledgers the phase writes: a DuckDB file, or a PostgreSQL database (its URL)."""
    if store == "postgres":
        from pipelines.store.postgres import PostgresDatabase
        return PostgresDatabase(where)
    from pipelines.schema import database
    return database(where)


def seed_suppressed(db) -> None:
    """50 suppressed addresses (hard bounces); `db` is a database or a DuckDB path."""
    from pipelines.store.store import Store
    from pipelines.store.write import BOOL, STR, arrow, insert

    db = open_database(db) if isinstance(db, str) else db
    n = 50
    with Store(db.connect).transaction() as c:
        insert(c, "email_addresses", arrow(address=(STR, [f"suppressed{i}@example.org" for i in range(n)]),
                                           verified=(BOOL, [False] * n), unverify_reason=(STR, ["hard-bounce"] * n)),
               on_conflict="DO NOTHING")


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ---- phases (each in its own process) ---------------------------------------------------------

class NullTransport:
    """Accepts everything at once: the pipeline's own ceiling (render, skip, claim, record)."""

    def send(self, email):
        return "null"

    def max_send_rate(self):
        return None


def make_transport(kind: str, env: dict):
    if kind == "null":
        return NullTransport()
    if kind == "smtp":
        from resources.smtp import SMTPSenderResource
        return SMTPSenderResource(host=env["SMTP_HOST"], port=int(env["SMTP_PORT"]))
    from resources.ses import SESSenderResource
    return SESSenderResource(region_name="us-east-1", configuration_set=env["SES_CONFIGURATION_SET"])


class Stamping:
    """Wraps a transport and keeps the wall-clock start of every send call."""

    def __init__(self, inner):
        self.inner, self.stamps = inner, []

    def send(self, email):
        self.stamps.append(time.time())
        return self.inner.send(email)

    def max_send_rate(self):
        return self.inner.max_send_rate()

    def close(self):
        getattr(self.inner, "close", lambda: None)()


def phase_pipeline(args: dict) -> dict:
    os.environ.update(args["env"])
    from bench.memory_queue import MemoryQueue
    from pipelines.common.consumer import run_consumer
    from pipelines.common.drain import DrainOptions
    from pipelines.email.consumer import EmailRequestConsumer
    from pipelines.email.builder import Builder
    from pipelines.email.sending import RetryPolicy, Sender
    from pipelines.store.store import Store

    store_kind = args.get("store", "duckdb")
    db = open_database(args["db_path"], store_kind)
    seed_suppressed(db)
    transport = Stamping(make_transport(args["transport"], args["env"]))
    builder = Builder()
    keep = args["requests"] <= 20_000
    started = time.perf_counter()
    sender = Sender(transport, concurrency=args["threads"], rate=args.get("rate"),
                    policy=RetryPolicy(max_attempts=5, base_delay=0.05))
    if args.get("rate"):
        sender.limiter.releases = []
    options = DrainOptions(max_messages=args["requests"], max_seconds=float("inf"), batch_size=args["batch"])
    with EmailRequestConsumer(builder, sender, default_sender=SENDER, transport_name=args["transport"],
                              inflight_window=args["window"], keep_send_seconds=keep,
                              on_recorded=on_recorded(store_kind)) as h, Store(db.connect) as store:
        st = run_consumer(MemoryQueue(request_stream(args["requests"], prefix=args["prefix"])), h, store,
                          options).counters
    seconds = time.perf_counter() - started
    getattr(db, "close", lambda: None)()
    skipped = {k.removeprefix("skipped_").replace("_", "-"): v for k, v in st.items() if k.startswith("skipped_")}
    processed = st["sent"] + st["failed"] + sum(skipped.values())
    out = {"requests": args["requests"], "recipients": st["recipients"], "sent": st["sent"], "failed": st["failed"],
           "skipped": skipped, "quarantined": st["quarantined"], "seconds": round(seconds, 3),
           "emails_per_s": round(st["sent"] / seconds, 1), "recipients_per_s": round(processed / seconds, 1),
           "peak_rss_mb": peak_rss_mb(), "threads": args["threads"], "batch": args["batch"], "store": store_kind,
           "inflight_window": args["window"], "skeleton_cache": dict(builder.stats)}
    if keep:
        out.update({"send_p50_ms": round(pct(h.send_seconds, 0.5) * 1e3, 2),
                    "send_p99_ms": round(pct(h.send_seconds, 0.99) * 1e3, 2),
                    "recorded_p50_ms": round(pct(h.record_seconds, 0.5) * 1e3, 1),
                    "recorded_p99_ms": round(pct(h.record_seconds, 0.99) * 1e3, 1)})
    if args.get("rate"):
        releases = sender.limiter.releases
        stamps = sorted(transport.stamps)
        out["first_to_last_send_s"] = round(stamps[-1] - stamps[0], 3)
        out["max_releases_in_1s_window"] = max_in_window(releases)
        out["max_send_calls_in_1s_window"] = max_in_window(stamps)
    return out


def on_recorded(store: str):
    """The hook the code location passes: delivery's re-linking of orphan notifications (on both
    engines)."""
    from pipelines.email_delivery.ingest import relink_orphans
    return relink_orphans


def max_in_window(stamps: list[float], width: float = 1.0) -> int:
    best, j = 0, 0
    for i, s in enumerate(stamps):
        while stamps[j] <= s - width:
            j += 1
        best = max(best, i - j + 1)
    return best


def phase_baseline(args: dict) -> dict:
    """One at a time, the way Warehouse's send_email task works."""
    os.environ.update(args["env"])
    import smtplib
    from email.message import EmailMessage
    from email.utils import make_msgid

    import logging

    import duckdb
    import premailer

    logging.getLogger("CSSUTILS").setLevel(logging.CRITICAL)   # premailer's css parser chatters

    from pipelines.email.catalogue import catalogue
    from pipelines.email.request import parse_request
    from pipelines.schema import create
    from resources.templates import DEFAULT_TEMPLATES_DIR, build_environment

    db_path = args["db_path"]
    create(db_path)
    env = build_environment(DEFAULT_TEMPLATES_DIR)
    kinds = catalogue()
    conn = smtplib.SMTP(args["env"]["SMTP_HOST"], int(args["env"]["SMTP_PORT"]))
    latencies = []
    sent = 0
    started = time.perf_counter()
    for body in request_stream(args["requests"], prefix=args["prefix"]):
        req = parse_request(body)
        spec = kinds[req.kind]
        for j, r in enumerate(req.recipients):
            t0 = time.perf_counter()
            if not r.email or (not r.verified and not spec.allow_unverified):
                continue
            ctx = {**req.context, "recipient_name": r.name or "", "recipient_email": r.email,
                   "site_name": "Mailroom", "site_url": "https://mailroom.test"}
            subject = " ".join(env.get_template(f"email/{req.kind}/subject.txt").render(ctx).split())
            text = env.get_template(f"email/{req.kind}/body.txt").render(ctx)
            html = premailer.transform(env.get_template(f"email/{req.kind}/body.html").render(ctx))
            db = duckdb.connect(db_path)
            try:
                if spec.repeat_window:   # Warehouse: checked at schedule time ...
                    db.execute("SELECT 1 FROM email_messages WHERE to_address = ? AND subject = ? "
                               "AND created_at > now() - to_seconds(?)",
                               [r.email, subject, int(spec.repeat_window.total_seconds())]).fetchall()
                msg = EmailMessage()
                msg["From"], msg["To"], msg["Subject"] = SENDER, r.email, subject
                msg["Message-ID"] = make_msgid(domain="mailroom.test")
                msg.set_content(text)
                msg.add_alternative(html, subtype="html")
                conn.send_message(msg)
                db.execute("INSERT INTO email_messages (request_id, to_address, kind, from_address, subject, "
                           "status, message_id, attempts, sent_at) VALUES (?, ?, ?, ?, ?, 'sent', ?, 1, now())",
                           [req.request_id, r.email, req.kind, SENDER, subject, msg["Message-ID"]])  # ... recorded at send
            finally:
                db.close()
            sent += 1
            latencies.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - started
    conn.quit()
    return {"requests": args["requests"], "sent": sent, "seconds": round(seconds, 3),
            "emails_per_s": round(sent / seconds, 1), "p50_ms": round(pct(latencies, 0.5) * 1e3, 2),
            "p99_ms": round(pct(latencies, 0.99) * 1e3, 2), "peak_rss_mb": peak_rss_mb()}


def phase_rate(args: dict) -> dict:
    """2,000 single-recipient emails at a configured 200/s."""
    os.environ.update(args["env"])
    global request_stream
    n = args["emails"]

    def one_each(count, seed=0, prefix="rate"):
        for i in range(count):
            yield json.dumps({"request_id": f"{prefix}-{i}", "kind": "two-factor-added",
                              "recipients": [{"email": f"{prefix}{i}@example.org", "verified": True}],
                              "context": {"method": "totp", "username": f"user{i}"}})

    request_stream = one_each   # noqa: F811 - the rate phase wants exactly n emails
    return phase_pipeline({**args, "requests": n})


def run_phase(fn, args: dict) -> dict:
    # A fresh process per phase (its own peak RSS); a worker that dies raises BrokenProcessPool.
    # The function is taken from the module by its import name: under `python -m bench` this file
    # runs as __main__, whose functions a spawned child could not unpickle.
    import importlib

    from devstack.progress import Step

    fn = getattr(importlib.import_module("bench.email_dispatch"), fn.__name__)
    with Step(f"  {fn.__name__} (fresh process)"), \
            ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        out = pool.submit(fn, args).result()
    out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)   # the machine is shared: context for the figures
    return out


def sink_window(reader, since: float) -> tuple[int, float]:
    """(max messages received in any 1-s window, arrival span) from the sink's received_at stamps."""
    times = sorted(m.received_at for m in reader.messages() if m.received_at >= since)
    return (max_in_window(times), round(times[-1] - times[0], 3)) if times else (0, 0.0)


def phase_sink_raw(args: dict) -> dict:
    """The SMTP sink's own capacity: pre-built messages, smtplib, `threads` reused connections."""
    import smtplib
    import threading

    from pipelines.email.builder import Builder
    from bench.samples import sample_context
    from pipelines.email.catalogue import catalogue
    from pipelines.email.request import EmailRequest, Recipient

    spec = catalogue()["password-reset"]
    r = EmailRequest("raw", spec.kind, (Recipient("raw@example.org", True),), sample_context(spec))
    raw = Builder().build(r, r.recipients[0], SENDER).raw
    n, threads = args["messages"], args["threads"]

    def work(k):
        c = smtplib.SMTP(args["env"]["SMTP_HOST"], int(args["env"]["SMTP_PORT"]))
        for i in range(n // threads):
            c.sendmail(SENDER, [f"raw{k}-{i}@example.org"], raw)
        c.quit()

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    started = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    seconds = time.perf_counter() - started
    sent = (n // threads) * threads
    return {"messages": sent, "threads": threads, "seconds": round(seconds, 3),
            "messages_per_s": round(sent / seconds, 1), "message_bytes": len(raw)}


# ---- main -------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--ses-requests", type=int, default=None, help="default: --requests")
    ap.add_argument("--baseline-requests", type=int, default=1_000)
    ap.add_argument("--memory-requests", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--skip", default="",
                    help="comma-separated phases to skip: null,sink,smtp,ses,baseline,rate,memory")
    ap.add_argument("--store", choices=("duckdb", "postgres"), default="duckdb",
                    help="where the pipeline phases keep the ledgers: a DuckDB file, or a fresh migrated "
                         "PostgreSQL database per phase (BENCH_PG_URL, dropped after); the baseline stays DuckDB")
    ap.add_argument("--out", default=None, help="where the results JSON goes (default: "
                    "bench/results/email_dispatch.json, email_dispatch_postgres.json for --store postgres)")
    a, _ = ap.parse_known_args()   # `python -m bench` passes suite names along
    if a.out is None:
        a.out = str(RESULTS if a.store == "duckdb" else RESULTS_POSTGRES)
    skip = set(filter(None, a.skip.split(",")))

    from devstack.env import stack_env
    from devstack.stack import config_from_env, down, up

    tmp = Path(tempfile.mkdtemp(prefix="bench-email-"))
    state, _ = up(config_from_env({"DEVSTACK_MOTO_PORT": "0", "DEVSTACK_SMTP_PORT": "0", "DEVSTACK_STRIPE_PORT": "0",
                                   "DEVSTACK_MAIL_PORT": "0"},
                                  state_dir=tmp / "stack", watch_pid=os.getpid()))
    env = {k: v for k, v in stack_env(state).items() if k != "DAGSTER_HOME"}
    from devstack.smtp_sink import SinkReader

    sink = SinkReader(state.sink_dir)
    common = {"env": env, "threads": a.threads, "batch": a.batch, "window": a.window, "store": a.store}

    @contextmanager
    def ledgers(name: str) -> Iterator[str]:
        """Where a phase's ledgers go: a fresh DuckDB file, or a fresh migrated PostgreSQL database
        (dropped after the phase)."""
        if a.store == "postgres":
            from bench.pg_database import migrated_database
            with migrated_database() as url:
                yield url
        else:
            yield str(tmp / f"{name}.duckdb")

    results: dict = {}
    out = Path(a.out)
    if skip and out.exists():   # a partial run updates only the phases it runs
        results = json.loads(out.read_text())
    results.update({"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "store": a.store,
                    "targets": TARGETS, "stack_startup_s": state.startup_seconds})
    try:
        if "null" not in skip:
            print("null transport ...", flush=True)
            with ledgers("null") as where:
                results["null"] = run_phase(phase_pipeline, {**common, "transport": "null", "requests": a.requests,
                                                             "db_path": where, "prefix": "n"})
        if "sink" not in skip:
            write_results(results, out)
            print("sink capacity ...", flush=True)
            results["sink_raw"] = run_phase(phase_sink_raw, {**common, "messages": 8000})
            sink.clear()
        if "smtp" not in skip:
            write_results(results, out)
            print("smtp ...", flush=True)
            with ledgers("smtp") as where:
                results["smtp"] = run_phase(phase_pipeline, {**common, "transport": "smtp", "requests": a.requests,
                                                             "db_path": where, "prefix": "s"})
            results["smtp"]["sink_messages"] = sink.count()
            sink.clear()
        if "baseline" not in skip:
            write_results(results, out)
            print("baseline ...", flush=True)
            results["baseline"] = run_phase(phase_baseline, {**common, "requests": a.baseline_requests,
                                                             "db_path": str(tmp / "baseline.duckdb"), "prefix": "w"})
            sink.clear()
        if "rate" not in skip:
            write_results(results, out)
            print("rate ...", flush=True)
            since = time.time()
            from pipelines.email.jobs import threads_for
            with ledgers("rate") as where:
                r = run_phase(phase_rate, {**common, "batch": 1000, "threads": threads_for(TARGETS["rate"], 0),
                                           "transport": "smtp", "emails": TARGETS["rate_emails"],
                                           "rate": TARGETS["rate"], "db_path": where, "prefix": "r"})
            r["sink_max_in_1s_window"], r["sink_arrival_span_s"] = sink_window(sink, since - 1)
            results["rate"] = r
            sink.clear()
        if "memory" not in skip:
            write_results(results, out)
            print("memory ...", flush=True)
            with ledgers("memory") as where:
                results["memory"] = run_phase(phase_pipeline, {**common, "transport": "smtp",
                                                               "requests": a.memory_requests,
                                                               "db_path": where, "prefix": "m"})
        if "ses" not in skip:
            write_results(results, out)
            print("ses ...", flush=True)
            with ledgers("ses") as where:
                results["ses"] = run_phase(phase_pipeline, {**common, "transport": "ses",
                                                            "requests": a.ses_requests or a.requests,
                                                            "db_path": where, "prefix": "e"})
    finally:
        down(tmp / "stack")
        shutil.rmtree(tmp, ignore_errors=True)

    s, b = results.get("smtp"), results.get("baseline")
    if s and b:
        results["speedup_vs_baseline"] = round(s["emails_per_s"] / b["emails_per_s"], 1)
    write_results(results, out)
    print_results(results, out)


def print_results(r: dict, out: Path) -> None:
    rows = []
    if "null" in r:
        rows.append(("pipeline ceiling (null transport): emails/s", r["null"]["emails_per_s"], ""))
    if "sink_raw" in r:
        rows.append(("SMTP sink alone (pre-built messages, smtplib): msgs/s", r["sink_raw"]["messages_per_s"], ""))
    if "smtp" in r:
        s = r["smtp"]
        rows += [("SMTP sink: emails/s", s["emails_per_s"], f">= {TARGETS['smtp_emails_per_s_min']}"),
                 ("SMTP sink: emails sent / recipients", f"{s['sent']} / {s['recipients']}", ""),
                 ("SMTP sink: send p50 / p99 per email", f"{s.get('send_p50_ms')} / {s.get('send_p99_ms')} ms", ""),
                 ("SMTP sink: recorded p50 / p99 (batch start -> committed)",
                  f"{s.get('recorded_p50_ms')} / {s.get('recorded_p99_ms')} ms", ""),
                 ("SMTP sink: peak RSS", f"{s['peak_rss_mb']} MB", "")]
    if "baseline" in r:
        b = r["baseline"]
        rows += [("baseline (Warehouse-style): emails/s", b["emails_per_s"], ""),
                 ("baseline: p50 / p99 per email", f"{b['p50_ms']} / {b['p99_ms']} ms", "")]
    if "speedup_vs_baseline" in r:
        rows.append(("speedup vs baseline", f"{r['speedup_vs_baseline']}x", f">= {TARGETS['speedup_vs_baseline_min']}x"))
    if "rate" in r:
        q = r["rate"]
        lo, hi = TARGETS["rate_seconds"] * (1 - TARGETS["rate_tolerance"]), TARGETS["rate_seconds"] * (1 + TARGETS["rate_tolerance"])
        rows += [(f"rate {TARGETS['rate']}/s: {q['sent']} emails, first to last send", f"{q['first_to_last_send_s']} s",
                  f"{lo:.1f}-{hi:.1f} s"),
                 ("rate: max in any 1-s window: limiter releases / send calls / sink arrivals",
                  f"{q['max_releases_in_1s_window']} / {q['max_send_calls_in_1s_window']} / "
                  f"{q['sink_max_in_1s_window']}", f"<= {TARGETS['rate']}")]
    if "ses" in r:
        e = r["ses"]
        rows += [("SES (moto): emails/s", e["emails_per_s"], ""),
                 ("SES (moto): send p50 / p99 per email", f"{e.get('send_p50_ms')} / {e.get('send_p99_ms')} ms", ""),
                 ("SES (moto): peak RSS", f"{e['peak_rss_mb']} MB", "")]
    if "memory" in r:
        m = r["memory"]
        rows += [(f"memory: {m['requests']} requests ({m['sent']} emails), peak RSS", f"{m['peak_rss_mb']} MB",
                  f"< {TARGETS['peak_rss_mb_max']} MB"),
                 ("memory run: emails/s", m["emails_per_s"], "")]
    print_table(rows)
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
