"""One host's run worker for the multi-host tests: drains one queue with the code location's own
drain job, one run after another, until FILE exists (the test has put every message on the queue) and the
queue holds no message, visible or in flight (another host's come back when their visibility ends).

    python drain_host.py QUEUE --fed FILE [--max-seconds S] [--deadline S]

It is copied into each host's own working directory and run from there (cwd and PYTHONPATH are
that copy), with that host's environment: the code, DAGSTER_HOME and DUCKDB_PATH are the host's
own; the ledgers (PostgreSQL), SQS, SES, S3 and the SMTP sink are shared. It prints one JSON line
per run with the run's counters, so the test can add them up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

JOBS = {  # queue -> (job, drain op, run config of the op)
    "email-requests": ("send_email_batch_job", "send_email_batch", {"inflight_window": 50}),
    "ses-notifications": ("ingest_ses_notifications_job", "drain_ses_notifications", {"verify_workers": 0}),
    "stripe-events": ("ingest_stripe_events_job", "drain_stripe_events", {}),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("queue", choices=sorted(JOBS))
    p.add_argument("--max-seconds", type=float, default=30.0, help="per run")
    p.add_argument("--fed", type=Path, required=True, help="exists once every message is on the queue")
    p.add_argument("--deadline", type=float, default=600.0, help="stop starting runs after this long")
    args = p.parse_args(argv)

    import dagster as dg

    import pipelines
    from pipelines.definitions import defs

    print(json.dumps({"code": pipelines.__file__}), flush=True)   # the host's own copy

    job_name, op_name, extra = JOBS[args.queue]
    job = defs.resolve_job_def(job_name)
    config = {"ops": {op_name: {"config": {"wait_seconds": 1, "max_seconds": args.max_seconds, **extra}}}}
    # An in-memory instance per worker: what the runs record is local to it, as a run container's is
    # before its events reach the shared instance; the ledgers are the shared state under test.
    instance = dg.DagsterInstance.ephemeral()
    queue = os.environ[args.queue.upper().replace("-", "_") + "_QUEUE"]   # this deployment's queue name
    started = time.monotonic()

    def more() -> bool:
        return not args.fed.exists() or _held(queue) > 0

    while more() and time.monotonic() - started < args.deadline:
        result = job.execute_in_process(instance=instance, run_config=config, raise_on_error=False)
        if not result.success:
            print(json.dumps({"queue": args.queue, "run": result.run_id, "success": False}), flush=True)
            return 1
        out = result.output_for_node(op_name)
        print(json.dumps({"queue": args.queue, "run": result.run_id, "success": True,
                          **{k: v for k, v in out.items() if isinstance(v, (int, float))}}), flush=True)
    if more():
        print(f"{args.queue}: messages still queued after the {args.deadline:.0f} s deadline", file=sys.stderr)
        return 2
    return 0


def _held(queue: str) -> int:
    """Messages in the queue, visible or in flight."""
    import boto3

    sqs = boto3.client("sqs", region_name=os.environ["AWS_REGION"])
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return sum(int(v) for v in attrs.values())


if __name__ == "__main__":
    sys.exit(main())
