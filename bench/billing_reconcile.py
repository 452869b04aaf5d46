"""Billing reconciliation benchmark: `python -m bench.billing_reconcile [--n 100000] [--changed 0.01]`.

`--changed` is a share of the subscriptions (0 to 1) or, above 1, a count of them; either way at
least one and at most all N change.

Data: N customers, each with an active subscription, a paid invoice and its PaymentIntent, in a
local Stripe started for the run (its /_control/seed), so N objects of each swept type.

Phases, each in a fresh process so each peak RSS is its own (the local Stripe is another process):
1. full sweep into empty tables (every row inserted and recorded as drift);
2. full sweep again, tables in step (the weekly sweep's usual case);
3. 1% of the subscriptions (`--changed`) change seats through the API, then an incremental run (Events API
   from the cursor, one retrieve per touched object);
4. an incremental run with nothing changed (one list call);
5. baseline, same run, Warehouse's way: retrieve every subscription by id and compare.

Stripe calls are counted per object type by the reconciler and per endpoint by the client.
The client's rate limiter is set high (the local Stripe has no limit): the comparison is of
calls and work, and at Stripe's 100 requests/s live limit the baseline's N calls alone take
N/100 seconds. Results: bench/results/billing_reconcile.json and a printed table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "billing_reconcile.json"
TARGETS = {"peak_rss_mb_max": 500, "fewer_calls_than_baseline_min": 20.0}
TYPES = ("customer", "subscription", "invoice", "payment_intent")


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _control(base: str, path: str, body: dict | None = None, timeout: float = 1800) -> dict:
    req = urllib.request.Request(f"{base}/_control/{path}", data=json.dumps(body or {}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def _resource(base: str):
    from resources.stripe_client import StripeResource

    return StripeResource(api_key="sk_test_local", webhook_secret="whsec_local", api_base=base,
                          rate_limit_per_second=1_000_000.0, retry_initial_delay=0.05)


def _database(path: str):
    from pipelines.schema import database

    return database(path)


# --- one phase, in its own process ---------------------------------------------------------------

def run_phase(phase: str, base: str, db_path: str) -> dict:
    from pipelines.billing.jobs import reconciling

    res = _resource(base)
    db = _database(db_path)
    started = time.perf_counter()
    with reconciling(res, db, run_id=f"bench-{phase}-{os.getpid()}") as rec:   # the job's own wiring
        if phase in ("full_cold", "full_warm"):
            report = rec.full_sweep()
        elif phase in ("incremental", "incremental_nothing"):
            report = rec.incremental()
        elif phase == "baseline":
            report = _baseline(res.client(), db, rec)
        else:
            raise SystemExit(f"unknown phase {phase}")
    seconds = time.perf_counter() - started
    return {"phase": phase, "seconds": round(seconds, 2), "calls_by_type": dict(report.calls),
            "calls_total": sum(report.calls.values()), "calls_by_endpoint": dict(res.http.calls),
            "objects_checked": sum(report.checked.values()), "differences": sum(report.differences.values()),
            "differences_by_type": dict(report.differences), "unrepaired": len(report.unrepaired),
            "fallback_reason": report.fallback_reason, "peak_rss_mb": peak_rss_mb()}


def _baseline(client, db, rec):
    """Warehouse's reconciliation: every subscription retrieved by id, compared, repaired."""
    from pipelines.billing.reconcile import ReconcileReport
    from pipelines.store.store import Store

    report = ReconcileReport(rec.run_id, "baseline")
    with Store(db.connect).read() as conn:
        ids = [r[0] for r in conn.execute("SELECT subscription_id FROM stripe_subscriptions ORDER BY 1").fetchall()]
    batch = []
    for sid in ids:
        batch.append(client.v1.subscriptions.retrieve(sid).to_dict())
        report.calls["subscription"] += 1
        if len(batch) == 1000:
            rec.compare_and_repair("subscription", batch, report)
            batch = []
    rec.compare_and_repair("subscription", batch, report)
    return report


def _phase_in_child(phase: str, base: str, db_path: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.billing_reconcile", "--phase", phase, "--base", base,
                          "--db", db_path], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the whole run -----------------------------------------------------------------------------------

def _start_stripe() -> tuple[subprocess.Popen, str]:
    from devstack.stack import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "devstack.local_stripe", "--port", str(port), "--delivery", "off",
                             "--watch-pid", str(os.getpid())], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{base}/_control/health", timeout=2).read()
            return proc, base
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the local Stripe did not start")
            time.sleep(0.2)


def _change_seats(base: str, n_changes: int, seed: int = 7) -> int:
    """n_changes subscriptions get a new quantity through the API (8 threads), as seat sync would."""
    res = _resource(base)
    client = res.client()
    ids: list[str] = []
    params: dict = {"limit": 100}
    while True:  # ids from the local Stripe's state (not counted in any phase)
        page = client.v1.subscriptions.list(params)
        ids.extend(s["id"] for s in page.data)
        if not page.has_more:
            break
        params["starting_after"] = page.data[-1]["id"]
    rng = random.Random(seed)
    chosen = rng.sample(ids, min(n_changes, len(ids)))

    def bump(sid: str) -> None:
        sub = client.v1.subscriptions.retrieve(sid)
        item = sub["items"]["data"][0]
        client.v1.subscriptions.update(sid, {"items": [{"id": item["id"], "quantity": int(item["quantity"]) + 1}]})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(bump, chosen))
    return len(chosen)


def _changed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r}: a share in (0, 1] or a count above 1")
    return value


def changes_for(n: int, changed: float) -> int:
    """How many subscriptions change: `changed` of them when it is a share (up to 1), else that many;
    at least one, at most all n."""
    return min(n, max(1, int(n * changed if changed <= 1 else changed)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--changed", type=_changed, default=0.01,
                        help="a share of the subscriptions (0 to 1), or above 1 a count of them")
    parser.add_argument("--phase")
    parser.add_argument("--base")
    parser.add_argument("--db")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.base, args.db)))
        return

    n = args.n
    if n < 1:
        parser.error("--n: at least one customer")
    proc, base = _start_stripe()
    try:
        t0 = time.perf_counter()
        seeded = _control(base, "seed", {"customers": n})
        seed_seconds = round(time.perf_counter() - t0, 1)
        print(f"seeded {n} customers/subscriptions/invoices/payment intents in {seed_seconds}s: {seeded['totals']}",
              flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            db_path = str(Path(tmp) / "bench.duckdb")
            from pipelines.schema import create as create_schema

            create_schema(db_path)
            results: dict = {}
            for phase in ("full_cold", "full_warm"):
                results[phase] = _phase_in_child(phase, base, db_path)
                print(f"{phase}: {results[phase]['seconds']}s, calls {results[phase]['calls_by_type']}, "
                      f"RSS {results[phase]['peak_rss_mb']} MB", flush=True)
            n_changes = changes_for(n, args.changed)
            t0 = time.perf_counter()
            n_changes = _change_seats(base, n_changes)
            change_seconds = round(time.perf_counter() - t0, 1)
            for phase in ("incremental", "incremental_nothing", "baseline"):
                results[phase] = _phase_in_child(phase, base, db_path)
                print(f"{phase}: {results[phase]['seconds']}s, calls {results[phase]['calls_by_type']}, "
                      f"RSS {results[phase]['peak_rss_mb']} MB", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    pages = math.ceil(n / 100)
    full = results["full_warm"]
    inc = results["incremental"]
    base_calls = results["baseline"]["calls_total"]
    checks = {
        "full_sweep_calls_per_type_max": pages + 2,
        "full_sweep_calls_per_type_ok": all(full["calls_by_type"].get(t, 0) <= pages + 2 for t in TYPES)
        and all(results["full_cold"]["calls_by_type"].get(t, 0) <= pages + 2 for t in TYPES),
        "incremental_calls_max": n_changes + inc["calls_by_type"].get("event", 0),
        "incremental_calls_ok": sum(v for k, v in inc["calls_by_type"].items() if k != "event") <= n_changes,
        "incremental_nothing_one_call": results["incremental_nothing"]["calls_total"] == 1,
        "fewer_calls_than_baseline_full": round(base_calls / max(1, full["calls_total"]), 1),
        "fewer_calls_than_baseline_incremental": round(base_calls / max(1, inc["calls_total"]), 1),
        "less_time_than_baseline_full": full["seconds"] < results["baseline"]["seconds"],
        "peak_rss_ok": max(r["peak_rss_mb"] for r in results.values()) < TARGETS["peak_rss_mb_max"],
        "no_drift_after_warm_sweep": full["differences"] == 0,
        "incremental_found_every_change": inc["differences_by_type"].get("subscription", 0) >= n_changes,
    }
    checks["fewer_calls_than_baseline_ok"] = (checks["fewer_calls_than_baseline_incremental"]
                                              >= TARGETS["fewer_calls_than_baseline_min"])
    summary = {"n": n, "changed": n_changes, "seed_seconds": seed_seconds, "change_seconds": change_seconds,
               "targets": TARGETS, "checks": checks, "phases": results,
               "command": f"python -m bench.billing_reconcile --n {n} --changed {args.changed}"}
    rows = [(name, r["seconds"], r["calls_total"], r["calls_by_type"], r["differences"], r["peak_rss_mb"])
            for name, r in results.items()]
    print(f"\n{'phase':<22}{'seconds':>9}{'calls':>9}  {'diffs':>7}{'RSS MB':>8}  calls by type")
    for name, secs, calls, by_type, diffs, rss in rows:
        print(f"{name:<22}{secs:>9}{calls:>9}  {diffs:>7}{rss:>8}  {by_type}")
    print(json.dumps(checks, indent=1))
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
