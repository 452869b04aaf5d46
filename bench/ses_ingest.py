"""SES notification ingestion benchmark: `python -m bench.ses_ingest [--n 100000]`.

Data: N SQS bodies carrying signed SNS envelopes (local RSA-2048 key, SignatureVersion 1 and 2),
mixed SES types in both formats, 5% duplicates (the same SNS message delivered again), for
messages that exist in email_messages (plus ~1% orphans).

1. in process, no SQS: parse + verify + state machine + DuckDB write, in the drain op's batches
   (DrainConfig.batch_size) with its verify workers, once more with the other worker setting,
   once more after --old-messages rows of earlier mail (does the status lookup grow with the table?);
   plus the verify stage alone (the worker pool, no DuckDB), the ceiling for the whole;
2. baseline, same run, the way Warehouse works: one notification at a time, verify, then one
   transaction (look up the event and the message, insert, update, address upsert); timed on
   a sample because it is slow;
3. end to end from the local SQS (moto, via the devstack API): a producer keeps a backlog on a
   queue while a separate consumer process drains it with run_consumer, exactly as the drain op
   does; reports notifications/s, SQS calls per notification and the consumer's peak RSS.

Every measured run goes through pipelines.common.consumer.run_consumer, the op's own entry, with
the op's own consumer object. Each in-process run reports where the drain thread's time went
(phase timings from the run's own counters: receive, verify, assemble, apply, write, commit,
plus the final checkpoint) and the CPU per notification of the drain process and its workers.

`--store postgres` runs the same (the in-process runs, the baseline, SQS) against PostgreSQL: a fresh
database on DATABASE_URL's server (default 127.0.0.1:5432) per run, migrated, dropped after; results
in bench/results/ses_ingest_postgres.json. `--scale-out 1,2,4,8` (PostgreSQL) then measures N
drain processes at once, each the drain op's run_consumer with the SES consumer, on one queue
of bench/sqs_endpoint.py (a round trip of --latency-ms per call), into one database.

Results: bench/results/ses_ingest.json and a printed table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from multiprocessing import Pool
from pathlib import Path

from bench.report import print_table, write_results
from bench.sqs_feed import feeding, moto_queue
from devstack.progress import Step


RESULTS = Path(__file__).parent / "results" / "ses_ingest.json"
RESULTS_POSTGRES = Path(__file__).parent / "results" / "ses_ingest_postgres.json"
PG_SERVER = os.environ.get("BENCH_PG_SERVER", "postgresql://postgres@127.0.0.1:5432")
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-notifications"
TARGETS = {"sqs_calls_per_notification_max": 0.25, "in_process_per_s_min": 20_000,
           "speedup_vs_baseline_min": 10.0, "peak_rss_mb_max": 500}
TARGETS_POSTGRES = {**TARGETS, "in_process_per_s_min": 10_000}

# (weight, type, format) for unique notifications
MIX = [(0.28, "Delivery", "classic"), (0.27, "Delivery", "event"), (0.05, "Bounce-Permanent", "classic"),
       (0.03, "Bounce-Permanent", "event"), (0.04, "Bounce-Transient", "classic"), (0.03, "Bounce-Transient", "event"),
       (0.02, "Complaint", "classic"), (0.01, "Complaint", "event"), (0.10, "Send", "event"),
       (0.10, "Open", "event"), (0.05, "Click", "event"), (0.02, "DeliveryDelay", "event")]


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def ses_payload(kind: str, fmt: str, message_id: str, to: str, at: datetime) -> str:
    ts = _iso(at)
    mail = {"timestamp": _iso(at - timedelta(seconds=2)), "source": "noreply@mailroom.test",
            "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/mailroom.test",
            "sendingAccountId": "123456789012", "messageId": message_id, "destination": [to],
            "headersTruncated": False,
            "headers": [{"name": "From", "value": "PyPI <noreply@mailroom.test>"}, {"name": "To", "value": to},
                        {"name": "Subject", "value": "[PyPI] Password reset"}, {"name": "MIME-Version", "value": "1.0"},
                        {"name": "Content-Type", "value": "multipart/alternative; boundary=\"b1\""}],
            "commonHeaders": {"from": ["PyPI <noreply@mailroom.test>"], "to": [to], "messageId": message_id,
                              "subject": "[PyPI] Password reset"},
            "tags": {"kind": ["password-reset"], "ses:configuration-set": ["mailroom"]}}
    if kind == "Delivery":
        body = {"delivery": {"timestamp": ts, "processingTimeMillis": 812, "recipients": [to],
                             "smtpResponse": "250 2.6.0 Message received", "reportingMTA": "a8-1.smtp-out.amazonses.com"}}
    elif kind.startswith("Bounce"):
        btype = kind.split("-")[1]
        body = {"bounce": {"feedbackId": uuid.uuid4().hex, "bounceType": btype, "bounceSubType": "General",
                           "bouncedRecipients": [{"emailAddress": to, "action": "failed", "status": "5.1.1",
                                                  "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
                           "timestamp": ts, "reportingMTA": "dns; a8-1.smtp-out.amazonses.com"}}
    elif kind == "Complaint":
        body = {"complaint": {"feedbackId": uuid.uuid4().hex, "complainedRecipients": [{"emailAddress": to}],
                              "timestamp": ts, "userAgent": "Mozilla/5.0", "complaintFeedbackType": "abuse"}}
    elif kind == "Send":
        body = {"send": {}}
    elif kind == "Open":
        body = {"open": {"timestamp": ts, "ipAddress": "192.0.2.1", "userAgent": "Mozilla/5.0"}}
    elif kind == "Click":
        body = {"click": {"timestamp": ts, "ipAddress": "192.0.2.1", "userAgent": "Mozilla/5.0",
                          "link": "https://pypi.org/account/reset", "linkTags": {}}}
    else:
        body = {"deliveryDelay": {"timestamp": ts, "delayType": "TransientCommunicationFailure",
                                  "expirationTime": ts, "delayedRecipients": [{"emailAddress": to}]}}
    name = kind.split("-")[0]
    head = {"eventType": name} if fmt == "event" else {"notificationType": name}
    return json.dumps({**head, **body, "mail": mail})


_KEY = None


def _init_signer(key_pem: bytes) -> None:
    global _KEY
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    _KEY = load_pem_private_key(key_pem, password=None)


def _sign(args: tuple[dict, str, str]) -> str:
    from devstack.sns_signer import sign_envelope

    envelope, version, cert_url = args
    return json.dumps(sign_envelope(envelope, _KEY, version, cert_url))


def make_dataset(n: int, seed: int, identity) -> tuple[list[str], list[tuple[str, str, str]], int]:
    """(SQS bodies, email_messages rows (request_id, to, message_id), expected distinct events)."""
    from cryptography.hazmat.primitives import serialization

    rng = random.Random(seed)
    unique = n - n // 20
    n_messages = max(1, int(unique * 0.7))
    messages = [(f"req-{i}", f"user{i % (n_messages // 3 + 1)}@example.org", f"0100{i:012d}-bench-000000")
                for i in range(n_messages)]
    weights = [w for w, _, _ in MIX]
    now = datetime.now(timezone.utc)
    jobs = []
    for i in range(unique):
        _, kind, fmt = rng.choices(MIX, weights)[0]
        if rng.random() < 0.01:
            message_id, to = f"orphan-{i}", f"stranger{i}@example.net"
        else:
            _, to, message_id = messages[rng.randrange(n_messages)]
        at = now - timedelta(seconds=rng.randrange(0, 600))
        env = {"Type": "Notification", "MessageId": str(uuid.UUID(int=rng.getrandbits(128))), "TopicArn": TOPIC,
               "Message": ses_payload(kind, fmt, message_id, to, at), "Timestamp": _iso(now),
               "UnsubscribeURL": f"https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={TOPIC}:x"}
        jobs.append((env, "1" if i % 2 else "2", identity.cert_url))
    key_pem = identity.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
    with Pool(os.cpu_count() or 2, initializer=_init_signer, initargs=(key_pem,)) as pool:
        bodies = pool.map(_sign, jobs, chunksize=500)
    bodies += [bodies[rng.randrange(unique)] for _ in range(n - unique)]
    rng.shuffle(bodies)
    return bodies, messages, unique


def is_postgres(where: str) -> bool:
    return where.startswith("postgresql://")


def open_db(where: str):
    """The ledgers at `where`: a DuckDB file, or a PostgreSQL database URL (both have `.connect()`)."""
    if is_postgres(where):
        from pipelines.store.postgres import PostgresDatabase
        return PostgresDatabase(where)
    from pipelines.schema import database
    return database(where)


def close_db(db) -> None:
    if hasattr(db, "close"):
        db.close()


class PgDatabases:
    """Fresh PostgreSQL databases for the runs (mailroom_bench_<epoch>_<random>, migrated), dropped
    at close."""

    def __init__(self, server: str = PG_SERVER):
        self.server = server.rstrip("/")
        self.names: list[str] = []

    def new(self) -> str:
        import psycopg

        from pipelines.store import migrate

        name = f"mailroom_bench_{int(time.time())}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{self.server}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        migrate.apply(f"{self.server}/{name}")
        return f"{self.server}/{name}"

    def drop(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(f"{self.server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.names:
            self.names.remove(name)

    def close(self) -> None:
        for name in list(self.names):
            self.drop(f"{self.server}/{name}")


def setup_db(path: str, messages, old: int = 0) -> None:
    """email_messages rows for the dataset, after `old` rows of earlier mail (SES message ids begin
    with the send time, so earlier mail has smaller ids)."""
    from pipelines.store.store import Store
    from pipelines.store.write import STR, arrow, with_rows

    db = open_db(path)
    with Store(db.connect).transaction() as conn:
        if old and is_postgres(path):
            conn.execute("INSERT INTO email_messages (request_id, to_address, kind, message_id, status, attempts, "
                         "sent_at) SELECT 'old-' || i, 'old' || i || '@example.org', 'password-reset', "
                         "'0000' || lpad(i::text, 12, '0') || '-old-000000', 'delivered', 1, "
                         "now() - interval '10 days' FROM generate_series(0, ? - 1) AS r(i)", [old])
        elif old:
            conn.execute("INSERT INTO email_messages (request_id, to_address, kind, message_id, status, attempts, "
                         "sent_at) SELECT 'old-' || i, 'old' || i || '@example.org', 'password-reset', "
                         "printf('0000%012d-old-000000', i), 'delivered', 1, now() - INTERVAL 10 DAY FROM range(?) r(i)",
                         [old])
        rows = arrow(request_id=(STR, [m[0] for m in messages]), to_address=(STR, [m[1] for m in messages]),
                     message_id=(STR, [m[2] for m in messages]))
        with_rows(conn, "INSERT INTO email_messages (request_id, to_address, kind, message_id, status, attempts, "
                        "sent_at) SELECT request_id, to_address, 'password-reset', message_id, 'sent', 1, now() "
                        "FROM rows", rows)
    if is_postgres(path):
        with db.connect() as conn:
            conn.execute("ANALYZE")   # as autovacuum would soon after a bulk load
    close_db(db)


def make_ingestor(cert_dir: str):
    from pipelines.common.sns.cert_store import CertStore
    from pipelines.email_delivery.consumer import SesNotificationConsumer
    from pipelines.common.sns.verify import SnsVerifier

    return SesNotificationConsumer(SnsVerifier([TOPIC], CertStore(cert_dir), max_age_seconds=3600))


def db_counts(path: str) -> dict:
    if is_postgres(path):
        db = open_db(path)
        with db.connect() as c:
            out = {"events": c.execute("SELECT count(*) FROM email_events").fetchone()[0],
                   "quarantined": c.execute("SELECT count(*) FROM quarantine").fetchone()[0]}
        db.close()
        return out
    from pipelines.query import read_only

    with read_only(path, wait_seconds=60) as (c, _):
        return {"events": c.execute("SELECT count(*) FROM email_events").fetchone()[0],
                "quarantined": c.execute("SELECT count(*) FROM quarantine").fetchone()[0]}


# Where the drain thread's time goes (the run's counters, pipelines/email_delivery/phases.py):
# receive (waiting for and taking messages), verify (waiting for the verify workers, or verifying
# inline), assemble, apply (status machine, Arrow tables), write (DuckDB statements), commit
# (COMMIT); close is the final checkpoint (closing the store), "other" the rest of the wall time
# (the kit's own work, deletes, starting and joining its threads).
PHASES = ("receive", "verify", "assemble", "apply", "write", "commit")


def phase_seconds(counters: dict, seconds: float, close: float) -> dict[str, float]:
    out = {p: round(counters.get(f"{p}_ms", 0) / 1000, 3) for p in PHASES}
    out["close"] = round(close, 3)
    out["other"] = round(seconds - sum(out.values()), 3)
    return out


def phases_text(run: dict) -> str:
    return " + ".join(f"{p} {v:.2f}" for p, v in run["phase_seconds_median"].items())


def cpu_text(run: dict) -> str:
    cpu = run["cpu_us_per_notification_median"]
    return f"{cpu['drain_process']:.0f} µs drain process + {cpu['verify_workers']:.0f} µs verify workers"


def consumer_for(cert_dir: str, workers: int):
    from pipelines.email_delivery.heap import freeze_long_lived
    from pipelines.email_delivery.parallel import PooledSesNotificationConsumer

    ingestor = make_ingestor(cert_dir)
    freeze_long_lived()  # as the drain op's make_consumer does
    return PooledSesNotificationConsumer(ingestor, workers) if workers else ingestor


def run_in_process(bodies: list[str], db_path: str, cert_dir: str, workers: int, batch: int) -> dict:
    """The drain op's run_consumer, minus SQS (an in-memory queue): verify+parse (in `workers`
    processes, or inline when 0) overlapped with apply+write of the previous batch."""
    from bench.memory_queue import MemoryQueue
    from pipelines.common.consumer import run_consumer
    from pipelines.common.drain import DrainOptions
    from pipelines.store.store import Store

    db = open_db(db_path)
    connect = db.connect if is_postgres(db_path) else lambda: db.connect(config={"threads": 1})
    with ExitStack() as stack:
        stack.callback(close_db, db)
        consumer = consumer_for(cert_dir, workers)
        if workers:
            stack.enter_context(consumer)
        options = DrainOptions(max_messages=len(bodies), max_seconds=float("inf"), batch_size=batch)
        worker_pids = consumer.worker_pids() if workers else []
        workers_cpu_started = sum(cpu_seconds_of(pid) for pid in worker_pids)
        started, cpu_started = time.perf_counter(), time.process_time()
        with Store(connect, hold_seconds=10.0) as store:
            report = run_consumer(MemoryQueue(bodies), consumer, store, options)
            closing = time.perf_counter()
        # the final checkpoint (closing the store) is part of the measured time
        ended = time.perf_counter()
        seconds, cpu = ended - started, time.process_time() - cpu_started
        workers_cpu = sum(cpu_seconds_of(pid) for pid in worker_pids) - workers_cpu_started
    # CPU time of this process (all its threads) and of its verify workers: on a shared machine,
    # steadier than the rate, and the sum is what 2 uncontended cores would have to give.
    return {"notifications": len(bodies), "workers": workers, "batch": batch, "seconds": round(seconds, 3),
            "per_s": round(len(bodies) / seconds), "cpu_seconds": round(cpu, 3),
            "cpu_us_per_notification": round(cpu / len(bodies) * 1e6, 1),
            "workers_cpu_us_per_notification": round(workers_cpu / len(bodies) * 1e6, 1),
            "per_cpu_s": round(len(bodies) / cpu) if not workers else None,
            "phase_seconds": phase_seconds(report.counters, seconds, ended - closing),
            **report.counters.as_metadata()}


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc (0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_verify_only(bodies: list[str], cert_dir: str, workers: int, batch: int) -> dict:
    """The verify + parse stage alone (no DuckDB, no kit): what the worker pool delivers to the writer."""
    from pipelines.common.queue_message import QueueMessage
    from pipelines.email_delivery.parallel import PreparePool

    ingestor = make_ingestor(cert_dir)
    msgs = [QueueMessage(f"sqs-{i}", f"rh-{i}", b) for i, b in enumerate(bodies)]
    with PreparePool(ingestor, workers) as pool:
        started = time.perf_counter()
        for start in range(0, len(msgs), 10):
            pool.submit(msgs[start:start + 10])
        events = sum(pool.prepare(msgs[start:start + batch]).events.num_rows for start in range(0, len(msgs), batch))
        seconds = time.perf_counter() - started
    return {"notifications": len(bodies), "workers": workers, "events": events, "seconds": round(seconds, 3),
            "per_s": round(len(bodies) / seconds)}


def run_baseline(bodies: list[str], db_path: str, cert_dir: str) -> dict:
    """Warehouse-style: per notification, verify, then one transaction of row-at-a-time statements."""
    import duckdb

    from pipelines.email_delivery.address_health import AddressState, apply_effects
    from pipelines.email_delivery.ses_parse import parse_ses
    from pipelines.email_delivery.status_machine import step

    verifier = make_ingestor(cert_dir).verifier
    if is_postgres(db_path):
        import psycopg

        from pipelines.store.postgres import PostgresConnection

        raw = psycopg.connect(db_path, autocommit=True)
        conn = PostgresConnection(raw)
        conn.close = raw.close
        begin = "BEGIN"
        upsert = ("INSERT INTO email_addresses VALUES (?, ?, ?, ?, ?) ON CONFLICT (address) DO UPDATE SET "
                  "verified = excluded.verified, unverify_reason = excluded.unverify_reason, "
                  "transient_bounces = excluded.transient_bounces, last_event_at = excluded.last_event_at")
    else:
        conn = duckdb.connect(db_path)
        begin = "BEGIN TRANSACTION"
        upsert = "INSERT OR REPLACE INTO email_addresses VALUES (?, ?, ?, ?, ?)"
    started, cpu_started = time.perf_counter(), time.process_time()
    for body in bodies:
        env = json.loads(body)
        verifier.verify(env)
        events = parse_ses(env["Message"], env["MessageId"])
        conn.execute(begin)
        for ev in events:
            if conn.execute("SELECT 1 FROM email_events WHERE event_id = ?", [ev.event_id]).fetchone():
                continue
            row = conn.execute("SELECT status FROM email_messages WHERE message_id = ?", [ev.message_id]).fetchone()
            rule = step(row[0], ev.signal) if row else None
            conn.execute("INSERT INTO email_events (event_id, sns_message_id, message_id, recipient, event_type, "
                         "bounce_type, bounce_subtype, occurred_at, orphan, status_before, status_after, detail) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [ev.event_id, ev.sns_message_id, ev.message_id, ev.recipient, ev.event_type, ev.bounce_type,
                          ev.bounce_subtype, ev.occurred_at, row is None, row[0] if row else None,
                          rule.next_status if rule else None, ev.detail])
            if rule is None:
                continue
            if rule.next_status != row[0]:
                conn.execute("UPDATE email_messages SET status = ?, status_at = ? WHERE message_id = ?",
                             [rule.next_status, ev.occurred_at, ev.message_id])
            if ev.recipient and ev.signal:
                cur = conn.execute("SELECT address, verified, unverify_reason, transient_bounces, last_event_at "
                                   "FROM email_addresses WHERE address = ?", [ev.recipient]).fetchone()
                state, _ = apply_effects(AddressState(*cur) if cur else AddressState(ev.recipient),
                                         rule.effects, ev.event_id, ev.occurred_at)
                conn.execute(upsert,
                             [state.address, state.verified, state.unverify_reason, state.transient_bounces,
                              state.last_event_at])
        conn.execute("COMMIT")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    conn.close()
    return {"notifications": len(bodies), "seconds": round(seconds, 3), "per_s": round(len(bodies) / seconds),
            "cpu_us_per_notification": round(cpu / len(bodies) * 1e6, 1), "per_cpu_s": round(len(bodies) / cpu)}


# ---- end to end through SQS ----

def _proc_mb(pid: int | str, file: str, key: str) -> float | None:
    """A `key: N kB` line of /proc/<pid>/<file>, in MB; None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the
    parent across fork+exec, which would report the benchmark driver's memory."""
    mb = _proc_mb(pid, "status", "VmHWM:")
    return mb if mb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pss_mb(pid: int | str = "self") -> float:
    """A process's proportional set size: its private memory plus its share of pages it shares
    (the libraries the drain process and its workers all map). Summed over the processes it
    counts shared pages once, where a sum of RSS counts them once per process."""
    return _proc_mb(pid, "smaps_rollup", "Pss:") or 0.0


def consumer_main(args) -> None:
    """Child process: drain the queue into DuckDB through run_consumer, as the drain op does; print stats JSON."""
    from pipelines.common.consumer import run_consumer
    from pipelines.common.drain import DrainOptions
    from pipelines.store.store import Store
    from resources.aws import SQSQueueResource

    queue = SQSQueueResource(queue_name=args.queue, region_name="us-east-1")
    db = open_db(args.db)
    connect = db.connect if is_postgres(args.db) else lambda: db.connect(config={"threads": 1})
    rss_after_imports = peak_rss_mb()
    peak_pss = [0.0]

    with ExitStack() as stack:
        consumer = consumer_for(args.cert_dir, args.workers)
        if args.workers > 0:
            stack.enter_context(consumer)
        done = threading.Event()

        def sample_memory():
            while not done.wait(0.2):
                pids = ["self", *(consumer.worker_pids() if args.workers > 0 else [])]
                peak_pss[0] = max(peak_pss[0], sum(pss_mb(pid) for pid in pids))

        sampler = threading.Thread(target=sample_memory, name="pss-sampler", daemon=True)
        sampler.start()
        store = stack.enter_context(Store(connect, hold_seconds=10.0))
        # batch_size 200 rather than the op's 2,000: moto scans every in-flight message on each
        # send, receive and delete, so a small in-flight window keeps the emulator from dominating.
        report = run_consumer(queue, consumer, store, DrainOptions(
            max_messages=args.n, max_seconds=args.sqs_max_seconds, batch_size=200, wait_seconds=2,
            empty_polls_to_stop=3))
        done.set()
        sampler.join()
        workers_rss = sum(peak_rss_mb(pid) for pid in (consumer.worker_pids() if args.workers > 0 else []))
    print(json.dumps({**report.counters.as_metadata(), "seconds": report.seconds,
                      "peak_rss_mb": peak_rss_mb() + workers_rss, "workers_peak_rss_mb": workers_rss,
                      "main_peak_rss_mb": peak_rss_mb(), "main_rss_after_imports_mb": rss_after_imports,
                      "peak_pss_mb": peak_pss[0]}))


def run_sqs(bodies: list[str], db_path: str, cert_dir: str, endpoint: str, workers: int, max_seconds: float,
            step: Step | None = None) -> dict:
    sqs, name, url, env = moto_queue(endpoint, "bench-ses")

    def sent(count: int) -> None:
        if step is not None:
            step.note = f", {count:,} sent"

    with feeding(sqs, url, bodies, on_sent=sent):
        proc = subprocess.run([sys.executable, "-m", "bench.ses_ingest", "--consumer", "--queue", name, "--db", db_path,
                               "--cert-dir", cert_dir, "--n", str(len(bodies)), "--workers", str(workers),
                               "--sqs-max-seconds", str(max_seconds)],
                              env=env, capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    calls = out["receive_calls"] + out["delete_calls"]
    return {**out, "seconds": round(out["seconds"], 3), "per_s": round(out["received"] / out["seconds"]),
            "sqs_calls": calls, "sqs_calls_per_notification": round(calls / max(out["received"], 1), 4),
            "peak_rss_mb": round(out["peak_rss_mb"], 1), "peak_pss_mb": round(out["peak_pss_mb"], 1)}


# ---- scale-out: N drain processes on one queue, one PostgreSQL database ----

def scale_consumer_main(args) -> None:
    """One drain process: the drain op's run_consumer with the SES consumer, started when the driver
    writes a line to stdin (after every process has imported and connected); prints stats JSON."""
    from dataclasses import replace

    from pipelines.common.consumer import run_consumer
    from pipelines.email_delivery.jobs import DrainConfig
    from pipelines.store.store import Store
    from resources.aws import SQSQueueResource

    queue = SQSQueueResource(queue_name=args.queue, region_name="us-east-1")
    queue.visibility_timeout()   # the client and the URL, outside the timed part (the op does it too)
    base = DrainConfig().drain_options()
    options = replace(base, max_messages=args.n, max_seconds=600.0, batch_size=args.scale_batch or base.batch_size,
                      wait_seconds=1, empty_polls_to_stop=2)
    db = open_db(args.db)
    with ExitStack() as stack:
        consumer = consumer_for(args.cert_dir, args.workers)
        if args.workers > 0:
            stack.enter_context(consumer)
        store = stack.enter_context(Store(db.connect, hold_seconds=10.0))
        with store.read() as conn:   # connected before the start
            conn.execute("SELECT 1").fetchone()
        print("ready", flush=True)
        sys.stdin.readline()
        cpu0 = time.process_time()
        report = run_consumer(queue, consumer, store, options)
        cpu = time.process_time() - cpu0
    db.close()
    print(json.dumps({**report.counters.as_metadata(), "seconds": report.seconds, "cpu_seconds": round(cpu, 3)}))


def run_scale_point(ep, pg: PgDatabases, drains: int, bodies: list[str], messages, distinct: int, cert_dir: str,
                    args) -> dict:
    """`drains` processes at once on a fresh queue and database. Throughput: the notifications over
    the time from the start signal until every distinct event is stored (polled every 20 ms), so
    the drains' final empty polls are not counted."""
    url = pg.new()
    try:
        setup_db(url, messages)
        name = ep.fill(bodies)
        ep.control("Configure", latency_ms=args.latency_ms, reset_stats=True)
        env = {**os.environ, "AWS_ENDPOINT_URL": ep.url, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        cmd = [sys.executable, "-m", "bench.ses_ingest", "--scale-consumer", "--queue", name, "--db", url,
               "--cert-dir", cert_dir, "--n", str(len(bodies)), "--workers", str(args.scale_workers),
               "--scale-batch", str(args.scale_batch)]
        procs = [subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                 for _ in range(drains)]
        for proc in procs:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a drain process did not start")
        import psycopg

        with psycopg.connect(url, autocommit=True) as watch:
            started = time.perf_counter()
            for proc in procs:
                proc.stdin.write("go\n")
                proc.stdin.flush()
            stored = 0
            while stored < distinct:
                time.sleep(0.02)
                stored = watch.execute("SELECT count(*) FROM email_events").fetchone()[0]
                if time.perf_counter() - started > 600:
                    raise RuntimeError(f"{drains} drains: {stored:,} of {distinct:,} events after 600 s")
            seconds = time.perf_counter() - started
        outs = []
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            if proc.returncode:
                raise RuntimeError(f"a drain process failed ({proc.returncode})")
            outs.append(json.loads(out.strip().splitlines()[-1]))
        counts = db_counts(url)
        with psycopg.connect(url, autocommit=True) as c:
            addresses = c.execute("SELECT count(*), sum(transient_bounces) FROM email_addresses").fetchone()
    finally:
        pg.drop(url)
    return {"drains": drains, "notifications": len(bodies), "seconds": round(seconds, 3),
            "per_s": round(len(bodies) / seconds), "received": sum(o["received"] for o in outs),
            "events_new": sum(o["events_new"] for o in outs), "events_duplicate": sum(o["events_duplicate"] for o in outs),
            "quarantined": sum(o["quarantined"] for o in outs), "db": counts,
            "addresses": list(addresses), "cpu_seconds_drains": round(sum(o["cpu_seconds"] for o in outs), 2),
            "per_drain_received": [o["received"] for o in outs],
            "per_drain_write_s": [round(o.get("write_ms", 0) / 1000, 2) for o in outs],
            "per_drain_commit_s": [round(o.get("commit_ms", 0) / 1000, 2) for o in outs]}


def scale_out_main(args) -> None:
    from bench.drain_latency import Endpoint
    from devstack.sns_signer import generate_signing_identity

    if args.store != "postgres":
        raise SystemExit("--scale-out needs --store postgres: one DuckDB file has one writer process")
    counts = [int(x) for x in args.scale_out.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-ses-scale-"))
    identity = generate_signing_identity()
    cert_dir = work / "certs"
    cert_dir.mkdir()
    (cert_dir / identity.cert_name).write_bytes(identity.cert_pem)
    bodies, messages, unique = make_dataset(args.scale_n, args.seed, identity)
    print(f"dataset: {len(bodies):,} notifications ({unique:,} distinct)", flush=True)
    results = {"store": "postgres", "n": len(bodies), "distinct": unique, "latency_ms": args.latency_ms,
               "verify_workers_per_drain": args.scale_workers,
               "batch_size": args.scale_batch or None, "cpus": os.cpu_count(),
               "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "points": []}
    pg = PgDatabases()
    ep = Endpoint()
    try:
        for drains in counts:
            runs = []
            for r in range(args.scale_repeat):
                with Step(f"{drains} drain process(es), run {r + 1}/{args.scale_repeat}"):
                    runs.append(run_scale_point(ep, pg, drains, bodies, messages, unique, str(cert_dir), args))
            point = sorted(runs, key=lambda x: x["per_s"])[len(runs) // 2]
            point["runs_per_s"] = [x["per_s"] for x in runs]
            results["points"].append(point)
            print(f"{drains} drains: {point['per_s']:,}/s (runs {point['runs_per_s']}), events {point['db']}", flush=True)
    finally:
        ep.close()
        pg.close()
    first = results["points"][0]["per_s"]
    for point in results["points"]:
        point["ratio_to_1"] = round(point["per_s"] / first, 2)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["checks"] = {"every_point_stored_every_event": all(
        p["db"] == {"events": unique, "quarantined": 0} for p in results["points"])}
    out = Path(args.out or Path(__file__).parent / "results" / "ses_ingest_postgres_scale_out.json")
    write_results(results, out)
    print_table([(f"{p['drains']} drain process(es)", f"{p['per_s']:,} /s", f"x{p['ratio_to_1']}")
                 for p in results["points"]])
    print(f"checks: {results['checks']}\nwritten to {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--baseline-n", type=int, default=3_000)
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--workers", type=int, default=-1, help="verify worker processes; -1 = the drain op's auto choice")
    ap.add_argument("--repeat", type=int, default=3, help="in-process runs with the op's settings (median reported)")
    ap.add_argument("--batch", type=int, default=0, help="notifications per commit; 0 = the drain op's batch_size")
    ap.add_argument("--old-messages", type=int, default=2_000_000,
                    help="one more in-process run with this many older email_messages rows first (0: skip)")
    ap.add_argument("--skip-sqs", action="store_true")
    ap.add_argument("--sqs-n", type=int, default=5_000,
                    help="notifications through moto's SQS (0: all n; moto costs O(queue length) per call)")
    ap.add_argument("--sqs-max-seconds", type=float, default=7200,
                    help="the SQS consumer's time limit (moto does ~35-60 notifications/s)")
    ap.add_argument("--consumer", action="store_true")
    ap.add_argument("--queue")
    ap.add_argument("--db")
    ap.add_argument("--cert-dir")
    ap.add_argument("--out", help="where the results JSON goes (default: by --store)")
    ap.add_argument("--store", choices=("duckdb", "postgres"), default="duckdb",
                    help="postgres: a fresh migrated database per run on BENCH_PG_SERVER (default "
                         "postgresql://postgres@127.0.0.1:5432), dropped after")
    ap.add_argument("--scale-out", default="", help="postgres: drain processes at once, e.g. 1,2,4,8 "
                                                  "(against bench/sqs_endpoint.py; skips the in-process part)")
    ap.add_argument("--scale-n", type=int, default=20_000, help="notifications per scale-out point")
    ap.add_argument("--scale-workers", type=int, default=0, help="verify workers per drain process at scale-out")
    ap.add_argument("--scale-batch", type=int, default=500,
                    help="batch_size per drain at scale-out (0: the op's 2,000, which 8 drains sharing one "
                         "queue of --scale-n would fill only a few times)")
    ap.add_argument("--latency-ms", type=float, default=20, help="the SQS endpoint's round trip at scale-out")
    ap.add_argument("--scale-repeat", type=int, default=1, help="runs per scale-out point (median)")
    ap.add_argument("--scale-consumer", action="store_true")
    args = ap.parse_args()
    if args.consumer:
        consumer_main(args)
        return
    if args.scale_consumer:
        scale_consumer_main(args)
        return
    if args.scale_out:
        scale_out_main(args)
        return
    pg = PgDatabases() if args.store == "postgres" else None
    try:
        run_main(args, pg)
    finally:
        if pg is not None:
            pg.close()


def run_main(args, pg: PgDatabases | None) -> None:
    out_default = RESULTS_POSTGRES if pg is not None else RESULTS
    targets = TARGETS_POSTGRES if pg is not None else TARGETS

    def new_db(name: str) -> str:
        return pg.new() if pg is not None else str(work / f"{name}.duckdb")

    def done_with(where: str) -> None:
        if pg is not None:
            pg.drop(where)

    from devstack.sns_signer import generate_signing_identity

    work = Path(tempfile.mkdtemp(prefix="bench-ses-"))
    identity = generate_signing_identity()
    cert_dir = work / "certs"
    cert_dir.mkdir()
    (cert_dir / identity.cert_name).write_bytes(identity.cert_pem)
    t = time.perf_counter()
    bodies, messages, unique = make_dataset(args.n, args.seed, identity)
    print(f"dataset: {len(bodies):,} notifications ({unique:,} distinct SNS messages), "
          f"{len(messages):,} email_messages rows, signed in {time.perf_counter() - t:.1f} s", flush=True)

    results: dict = {"store": args.store, "n": args.n, "distinct": unique, "duplicates": args.n - unique, "cpus": os.cpu_count(),
                     "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "targets": targets}
    print(f"load average at the start: {' '.join(str(x) for x in results['load_average_at_start'])}", flush=True)
    from pipelines.email_delivery.jobs import DrainConfig
    from pipelines.email_delivery.parallel import auto_workers

    op_workers = auto_workers() if args.workers < 0 else args.workers
    batch = args.batch or DrainConfig().batch_size
    results["batch"] = batch
    other = 2 if op_workers == 0 else 0
    # "in_process" is what the drain op runs with its default config (verify_workers -1 = auto):
    # the median of --repeat runs, each into a fresh database.
    for label, workers, repeat in (("in_process", op_workers, args.repeat), (f"in_process_{other}_workers", other, 1)):
        runs = []
        for r in range(repeat):
            db1 = new_db(f"{label}-{r}")
            setup_db(db1, messages)
            with Step(f"{label} run {r + 1}/{repeat}: {len(bodies):,} notifications"):
                runs.append(run_in_process(bodies, db1, str(cert_dir), workers, batch))
            runs[-1]["db"] = db_counts(db1)
            done_with(db1)
        results[label] = sorted(runs, key=lambda x: x["per_s"])[len(runs) // 2]
        results[label]["runs_per_s"] = [x["per_s"] for x in runs]
        results[label]["phase_seconds_median"] = {p: statistics.median(x["phase_seconds"][p] for x in runs)
                                                  for p in runs[0]["phase_seconds"]}
        results[label]["cpu_us_per_notification_median"] = {
            "drain_process": statistics.median(x["cpu_us_per_notification"] for x in runs),
            "verify_workers": statistics.median(x["workers_cpu_us_per_notification"] for x in runs)}
        print(f"{label} ({workers} verify workers): {results[label]['per_s']:,}/s "
              f"(runs: {', '.join(f'{x:,}' for x in results[label]['runs_per_s'])})\n"
              f"  drain thread, seconds per phase (median of {repeat}): {phases_text(results[label])}\n"
              f"  CPU per notification (median): {cpu_text(results[label])}", flush=True)
    if args.old_messages:
        db1 = new_db("in-process-old")
        setup_db(db1, messages, old=args.old_messages)
        with Step(f"in_process with {args.old_messages:,} older rows"):
            results["in_process_old_messages"] = {"old_messages": args.old_messages,
                                                  **run_in_process(bodies, db1, str(cert_dir), op_workers, batch)}
        results["in_process_old_messages"]["db"] = db_counts(db1)
        done_with(db1)
        print(f"in_process with {args.old_messages:,} older email_messages rows: "
              f"{results['in_process_old_messages']['per_s']:,}/s", flush=True)
    pool_workers = op_workers or 2
    with Step("verify + parse stage alone"):
        results["verify_stage_only"] = run_verify_only(bodies, str(cert_dir), pool_workers, batch)
    print(f"verify + parse stage alone ({pool_workers} workers, no DuckDB): "
          f"{results['verify_stage_only']['per_s']:,}/s", flush=True)

    db2 = new_db("baseline")
    setup_db(db2, messages)
    with Step(f"baseline: {min(args.baseline_n, len(bodies)):,} notifications one at a time"):
        results["baseline"] = run_baseline(bodies[:args.baseline_n], db2, str(cert_dir))
    done_with(db2)
    print(f"baseline: {results['baseline']['per_s']:,}/s", flush=True)
    results["speedup_vs_baseline"] = round(results["in_process"]["per_s"] / results["baseline"]["per_s"], 1)
    results["speedup_vs_baseline_cpu"] = round(results["baseline"]["cpu_us_per_notification"]
                                               / results["in_process"]["cpu_us_per_notification"], 1)

    if not args.skip_sqs:
        from devstack.stack import config_from_env, down, up

        state_dir = work / "stack"
        state, _ = up(config_from_env({"DEVSTACK_MOTO_PORT": "0", "DEVSTACK_SMTP_PORT": "0"},
                                      state_dir=state_dir, watch_pid=os.getpid()))
        try:
            db3 = new_db("sqs")
            setup_db(db3, messages)
            sqs_bodies = bodies[:args.sqs_n] if args.sqs_n else bodies
            with Step(f"through SQS (moto): {len(sqs_bodies):,} notifications") as step:
                results["sqs_end_to_end"] = run_sqs(sqs_bodies, db3, str(cert_dir), state.endpoint, op_workers,
                                                    args.sqs_max_seconds, step)
            results["sqs_end_to_end"]["db"] = db_counts(db3)
            done_with(db3)
        finally:
            down(state_dir)

    e2e = results.get("sqs_end_to_end", {})
    results["checks"] = {
        "in_process_per_s": results["in_process"]["per_s"] >= targets["in_process_per_s_min"],
        "speedup_vs_baseline": results["speedup_vs_baseline"] >= targets["speedup_vs_baseline_min"],
        "all_events_stored": (results["in_process"]["db"]["quarantined"] == 0
                              and results["in_process"]["db"]["events"] == results["distinct"]),
        "old_messages_same_events": (results["in_process_old_messages"]["db"] == results["in_process"]["db"]
                                     if args.old_messages else None),
    }
    if e2e:
        results["checks"].update({
            "sqs_calls_per_notification": e2e["sqs_calls_per_notification"] <= targets["sqs_calls_per_notification_max"],
            "peak_rss_mb": e2e["peak_rss_mb"] < targets["peak_rss_mb_max"],
            "sqs_same_events_as_in_process": e2e["db"] == results["in_process"]["db"] if not args.sqs_n else None,
        })
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out or out_default)
    write_results(results, out)

    inline = results["in_process"] if op_workers == 0 else results[f"in_process_{other}_workers"]
    store_name = "PostgreSQL" if pg is not None else "DuckDB"
    print(f"store: {store_name}")
    rows = [(f"in process, {op_workers} verify workers (op default, median of {args.repeat})", f"{results['in_process']['per_s']:,} /s",
             f">= {targets['in_process_per_s_min']:,} /s"),
            ("  drain thread, s per phase (median)", phases_text(results["in_process"]), ""),
            ("  CPU per notification (median)", cpu_text(results["in_process"]), ""),
            (f"in process, {other} verify workers", f"{results[f'in_process_{other}_workers']['per_s']:,} /s", ""),
            *([(f"in process, after {args.old_messages:,} older email_messages rows",
                 f"{results['in_process_old_messages']['per_s']:,} /s", "")] if args.old_messages else []),
            (f"verify + parse stage alone, {pool_workers} workers", f"{results['verify_stage_only']['per_s']:,} /s", ""),
            ("in process, verify inline, per CPU-second", f"{inline['per_cpu_s']:,} /s", ""),
            ("baseline (Warehouse-style, 1 txn each)", f"{results['baseline']['per_s']:,} /s", ""),
            ("  same, per CPU-second", f"{results['baseline']['per_cpu_s']:,} /s", ""),
            ("speedup vs baseline", f"{results['speedup_vs_baseline']}x", f">= {targets['speedup_vs_baseline_min']}x")]
    if e2e:
        rows += [("end to end from SQS (moto)", f"{e2e['per_s']:,} /s", ""),
                 ("SQS calls per notification", f"{e2e['sqs_calls_per_notification']}", f"<= {targets['sqs_calls_per_notification_max']}"),
                 ("consumer peak RSS (sum over its processes)", f"{e2e['peak_rss_mb']} MB", f"< {targets['peak_rss_mb_max']} MB"),
                 ("consumer peak PSS (shared pages once)", f"{e2e['peak_pss_mb']} MB", "")]
    print_table(rows)
    print(f"load average at the end: {' '.join(str(x) for x in results['load_average_at_end'])}")
    print(f"checks: {results['checks']}\nwritten to {out}")


if __name__ == "__main__":
    main()
