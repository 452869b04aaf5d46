"""Run every benchmark in turn: `python -m bench` (or `make bench`)."""

import runpy
import sys

SUITES = ["bench.email_dispatch", "bench.ses_ingest", "bench.drain_latency", "bench.stripe_ingest",
          "bench.billing_reconcile", "bench.adhoc_queries", "bench.dev_warmup"]

if __name__ == "__main__":
    chosen = sys.argv[1:] or SUITES
    for name in chosen:
        print(f"\n===== {name} =====", flush=True)
        runpy.run_module(name if name.startswith("bench.") else f"bench.{name}", run_name="__main__")
