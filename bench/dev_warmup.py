"""How long `make dev` takes to show a full graph: `python -m bench.dev_warmup [--repeat 1]`.

Starts `python -m devstack dev` exactly as `make dev` does (its own state directory, DuckDB file,
Dagster home and free ports, so it never meets a running `make dev`), then watches its Dagster
instance until every materializable asset of the Definitions has a materialization and every
asset check has an evaluation. Then it stops the process with SIGINT (Ctrl-C) and checks the stop
left no run failed.

Measured, from the moment the command starts: the UI answering, the first run, each asset's first
materialization and each check's first evaluation; the last of them is "all done" (target 120 s).
The machine's load average is recorded with each round, since dagster dev's start-up is CPU-bound.

Results: bench/results/dev_warmup.json and a printed table.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from bench.report import print_table, write_results

RESULTS = Path(__file__).parent / "results" / "dev_warmup.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 120.0
EVALUATED = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}


def _keys():
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    assets = sorted(graph.get_all_asset_keys())
    checks = sorted(graph.asset_check_keys)
    return assets, checks


def _first_seen(instance, assets, checks, done_assets: dict, done_checks: dict) -> None:
    """Fill in each asset's first materialization and each check's first evaluation (wall time)."""
    import dagster as dg

    for key in assets:
        name = key.to_user_string()
        if name in done_assets:
            continue
        # A ledger or input table is reported (a materialization) by the run or command that wrote it.
        first = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1, ascending=True)
        if first.records:
            done_assets[name] = first.records[0].timestamp
    pending = [k for k in checks if f"{k.asset_key.to_user_string()}:{k.name}" not in done_checks]
    for key in pending:
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=1000, status=EVALUATED)
        if history:  # evaluated (passed or failed), not merely planned
            done_checks[f"{key.asset_key.to_user_string()}:{key.name}"] = min(
                r.event.timestamp if r.event else r.create_timestamp for r in history)


def one_round(timeout: float) -> dict:
    import dagster as dg

    assets, checks = _keys()
    with tempfile.TemporaryDirectory(prefix="dev-warmup-") as tmp:
        home = Path(tmp) / "dagster"
        home.mkdir()
        env = {**os.environ, "DEVSTACK_STATE_DIR": str(Path(tmp) / "stack"), "DEVSTACK_DAGSTER_HOME": str(home),
               "DEVSTACK_MOTO_PORT": "0", "DEVSTACK_SMTP_PORT": "0", "DEVSTACK_STRIPE_PORT": "0", "DEVSTACK_MAIL_PORT": "0",
               "DEVSTACK_DAGSTER_PORT": "0"}
        load_before = os.getloadavg()[0]
        started = time.time()
        out = open(Path(tmp) / "dev.out", "w")
        proc = subprocess.Popen([sys.executable, "-m", "devstack", "dev"], cwd=REPO_ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        ui_at = first_run_at = None
        done_assets: dict = {}
        done_checks: dict = {}
        try:
            while time.time() - started < timeout and proc.poll() is None:
                time.sleep(1.0)
                if ui_at is None and "UI at http" in (Path(tmp) / "dev.out").read_text(errors="replace"):
                    ui_at = time.time() - started
                if ui_at is None:
                    continue  # dagster dev creates the instance's storage; opening it earlier could race
                with dg.DagsterInstance.from_config(str(home)) as instance:
                    if first_run_at is None:
                        records = instance.get_run_records()
                        if records:
                            first_run_at = min(r.create_timestamp.timestamp() for r in records) - started
                    _first_seen(instance, assets, checks, done_assets, done_checks)
                if len(done_assets) == len(assets) and len(done_checks) == len(checks):
                    break
        finally:
            load_during = os.getloadavg()[0]
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            out.close()
        with dg.DagsterInstance.from_config(str(home)) as instance:
            failed = [r.job_name for r in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))]
            why_failed = {}
            for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])):
                why_failed[run.run_id] = [
                    f"{e.dagster_event.event_type_value}: {(e.message or '')[:400]}"
                    + (f" | {e.dagster_event.event_specific_data.error.message[:400]}"
                       if getattr(e.dagster_event.event_specific_data, "error", None) else "")
                    for e in instance.all_logs(run.run_id)
                    if e.dagster_event and e.dagster_event.event_type_value in (
                        "STEP_FAILURE", "PIPELINE_FAILURE", "RUN_FAILURE", "ENGINE_EVENT")]
            timeline = []
            for record in sorted(instance.get_run_records(), key=lambda r: r.create_timestamp):
                at = lambda t: round(t - started, 1) if t else None  # noqa: E731
                timeline.append({"job": record.dagster_run.job_name, "status": record.dagster_run.status.value,
                                 "created": at(record.create_timestamp.timestamp()),
                                 "started": at(record.start_time), "ended": at(record.end_time)})
            runs = len(timeline)
        output_tail = (Path(tmp) / "dev.out").read_text(errors="replace")[-2000:]
        if failed:
            output_tail += "\n--- dagster.log ---\n" + (Path(tmp) / "stack" / "dagster.log").read_text(
                errors="replace")[-6000:]
    rel = lambda d: {k: round(v - started, 1) for k, v in sorted(d.items(), key=lambda kv: kv[1])}  # noqa: E731
    complete = len(done_assets) == len(assets) and len(done_checks) == len(checks)
    times = [*done_assets.values(), *done_checks.values()]
    return {
        "complete": complete,
        "all_done_s": round(max(times) - started, 1) if complete else None,
        "ui_ready_s": round(ui_at, 1) if ui_at else None,
        "first_run_s": round(first_run_at, 1) if first_run_at else None,
        "assets": rel(done_assets),
        "checks": rel(done_checks),
        "missing_assets": [k.to_user_string() for k in assets if k.to_user_string() not in done_assets],
        "missing_checks": [f"{k.asset_key.to_user_string()}:{k.name}" for k in checks
                           if f"{k.asset_key.to_user_string()}:{k.name}" not in done_checks],
        "runs": runs,
        "timeline": timeline,
        "failed_runs": failed,
        "why_failed": why_failed,
        "load_before": round(load_before, 2),
        "load_during": round(load_during, 2),
        "dev_output_tail": output_tail if not complete or failed else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=420.0)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    rounds = []
    for i in range(args.repeat):
        result = one_round(args.timeout)
        rounds.append(result)
        print(f"round {i + 1}: all done {result['all_done_s']} s, UI {result['ui_ready_s']} s, "
              f"load {result['load_before']} -> {result['load_during']}, missing "
              f"{result['missing_assets'] + result['missing_checks']}, failed runs {result['failed_runs']}",
              flush=True)
        for name, at in sorted({**result["assets"], **result["checks"]}.items(), key=lambda kv: kv[1]):
            print(f"  {at:7.1f} s  {name}", flush=True)
        for run_id, lines in result["why_failed"].items():
            print(f"  failed run {run_id}:", *lines, sep="\n    ", flush=True)
        for run in result["timeline"]:
            print(f"  run {run['job']:<40} created {run['created']} started {run['started']} "
                  f"ended {run['ended']} {run['status']}", flush=True)
    done = [r["all_done_s"] for r in rounds if r["complete"]]
    median = statistics.median(done) if len(done) == len(rounds) else None
    results = {"target_s": TARGET_S, "median_all_done_s": median,
               "median_ui_ready_s": statistics.median(r["ui_ready_s"] or 0 for r in rounds), "rounds": rounds}
    print_table([
        ("every asset materialized + checks run (median)", f"{median} s" if median else "incomplete",
         f"<= {TARGET_S:g} s"),
        ("UI answering (median)", f"{results['median_ui_ready_s']} s", ""),
        ("runs that failed", sum(len(r["failed_runs"]) for r in rounds), "0"),
    ])
    if not args.no_save:
        write_results(results, RESULTS)


if __name__ == "__main__":
    main()
