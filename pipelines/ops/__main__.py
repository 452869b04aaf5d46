"""python -m pipelines.ops COMMAND [ARGS] [--wait] : launch an operator job on the Dagster instance.

  reconcile [--mode incremental|full]          reconcile_billing_job
  resync-customer CUSTOMER_ID                  resync_customer_job
  refund PAYMENT_ID [--amount N] [--reason R]  refund_payment_job (pi_/ch_; amount in minor units)
  cancel-subscription SUB_ID [--at-period-end] cancel_subscription_job
  seat-sync                                    seat_sync_job
  replay-ses [--limit N]                       replay_ses_quarantine_job
  replay-stripe [--limit N]                    replay_stripe_quarantine_job

The arguments are checked before anything is launched. The run goes to the instance in
DAGSTER_HOME (`eval "$(python -m devstack env)"` sets make dev's); its daemon starts it. Prints
the run id and its UI link (MAILROOM_UI_URL, default http://127.0.0.1:3000); with --wait, then the
outcome and the job's figures. Exit status: 0 launched (or, with --wait, succeeded); 1 the run
failed or was canceled; 2 bad arguments or not launched; 3 --wait ran out of time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines import settings
from pipelines.ops.commands import COMMANDS, REFUND_REASONS, RECONCILE_MODES, ConfigProblem

WORKSPACE = Path(__file__).resolve().parents[2] / "workspace.yaml"
DEFAULT_UI = "http://127.0.0.1:3000"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.ops", description="Launch an operator job.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {name: sub.add_parser(name, help=c.what, description=c.what) for name, c in COMMANDS.items()}
    commands["reconcile"].add_argument("--mode", default="incremental", choices=RECONCILE_MODES)
    commands["resync-customer"].add_argument("customer_id", help="cus_...")
    commands["refund"].add_argument("payment_id", help="pi_... or ch_...")
    commands["refund"].add_argument("--amount", type=int, help="minor units (cents); omitted: in full")
    commands["refund"].add_argument("--reason", help=", ".join(REFUND_REASONS))
    commands["cancel-subscription"].add_argument("subscription_id", help="sub_...")
    commands["cancel-subscription"].add_argument("--at-period-end", action="store_true",
                                                 help="cancel when the paid period ends")
    for name in ("replay-ses", "replay-stripe"):
        commands[name].add_argument("--limit", type=int, default=10_000, help="quarantined rows at most")
    for c in commands.values():
        c.add_argument("--wait", action="store_true", help="wait for the run, then print its outcome")
        c.add_argument("--timeout", type=float, default=900.0, help="seconds --wait waits at most (900)")
        c.add_argument("--workspace", type=Path, default=WORKSPACE, help="workspace file (workspace.yaml)")
    return p


def _arguments(args: argparse.Namespace) -> dict:
    common = {"command", "wait", "timeout", "workspace"}
    return {k: v for k, v in vars(args).items() if k not in common}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = COMMANDS[args.command]
    try:
        run_config = command.run_config(**_arguments(args))
    except ConfigProblem as exc:
        print(f"{args.command}: {exc}; nothing was launched", file=sys.stderr)
        return 2
    if not settings.value("DAGSTER_HOME"):
        print(f"{args.command}: DAGSTER_HOME is not set (the instance to launch on; "
              "`eval \"$(python -m devstack env)\"` sets make dev's); nothing was launched", file=sys.stderr)
        return 2

    import dagster as dg

    from pipelines.ops.launch import LaunchError, launch, outcome, wait

    ui = (settings.value("MAILROOM_UI_URL") or DEFAULT_UI).rstrip("/")
    with dg.DagsterInstance.get() as instance:
        try:
            run_id = launch(instance, args.workspace, command.job, run_config, tags={"launched_by": "pipelines.ops"})
        except LaunchError as exc:
            print(f"{args.command}: {exc}", file=sys.stderr)
            return 2
        print(f"{command.job}: run {run_id}", flush=True)
        print(f"  {ui}/runs/{run_id}", flush=True)
        if not args.wait:
            return 0

        def on_status(status: str, seconds: float) -> None:
            hint = " (the daemon starts it: `make dev` runs one)" if status == "QUEUED" else ""
            print(f"  {seconds:5.1f}s {status.lower()}{hint}", flush=True)

        status = wait(instance, run_id, args.timeout, on_status=on_status)
        if status not in ("SUCCESS", "FAILURE", "CANCELED"):
            print(f"{command.job}: still {status.lower()} after {args.timeout:g}s; follow it at {ui}/runs/{run_id}")
            return 3
        result = outcome(instance, run_id)
    print(f"{command.job}: {result.status.lower()}")
    for name, value in result.figures.items():
        print(f"  {name}: {value}")
    for error in result.errors:
        print(f"  error: {error}")
    return 0 if result.status == "SUCCESS" else 1


if __name__ == "__main__":
    sys.exit(main())
