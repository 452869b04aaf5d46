"""python -m devstack up|down|status|env|check|dev|incident

  up      start moto + SMTP sink + mailbox simulator + local Stripe (harmless when already up)
  down    stop them
  status  what is running, where
  env     `export` lines for the running stack (eval "$(python -m devstack env)")
  check   validate the current environment's variables; fails naming the variable
  dev     up, then `dagster dev` on 127.0.0.1:3000 with demo traffic; Ctrl-C stops everything
  incident bounce-storm|complaint-burst|leak|stripe-drift|poison|all
          while `make dev` runs: trip the checks on purpose (devstack/incidents.py)

Settings (environment): DEVSTACK_STATE_DIR (default <repo>/.devstack), DEVSTACK_MOTO_PORT
(4566), DEVSTACK_SMTP_PORT (2525), DEVSTACK_STRIPE_PORT (12111, the local Stripe), DEVSTACK_DAGSTER_PORT (3000) - 0 picks a free port;
DEVSTACK_DUCKDB_PATH (<state>/mailroom.duckdb), DEVSTACK_SNS_SIGNATURE_VERSION (2),
DEVSTACK_DEMO_INTERVAL (seconds between demo batches, 5; 0 turns demo traffic off),
DEVSTACK_DAGSTER_HOME (default <repo>/.dagster), DEVSTACK_MAIL_PORT (the mail viewer, 8025; unset and
8025 taken: another free port).
"""

from __future__ import annotations

import json
import os
import sys

from devstack.env import check_env, dev_env, export_lines
from devstack.progress import Step
from devstack.stack import StackError, config_from_env, down, is_running, status, up
from devstack.state import StackState, state_dir_from_env


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else "status"
    try:
        if command == "up":
            with Step("starting the local stack (moto, SMTP sink, mailbox simulator)"):
                state, already = up(config_from_env())
            word = "already running" if already else f"started in {state.startup_seconds:.2f}s"
            print(f"local stack {word}: moto {state.endpoint}, SMTP sink 127.0.0.1:{state.smtp_port}, "
                  f"local Stripe {state.stripe_base}, state {state.state_dir}")
            print(f"mail viewer (every email sent, SES and SMTP): {state.mail_url}")
            print('environment: eval "$(python -m devstack env)"')
            return 0
        if command == "down":
            print("local stack stopped" if down(state_dir_from_env()) else "no local stack was running")
            return 0
        if command == "status":
            info = status(state_dir_from_env())
            print(json.dumps(info, indent=2))
            return 0 if info["running"] else 3
        if command == "env":
            state = StackState.load(state_dir_from_env())
            if state is None:
                print("no local stack: start it with `python -m devstack up`", file=sys.stderr)
                return 1
            if not is_running(state):
                print(f"warning: the stack recorded in {state.state_dir} is not running; "
                      "start it with `python -m devstack up`", file=sys.stderr)
            sys.stdout.write(export_lines(dev_env(state, os.environ)))
            return 0
        if command == "check":
            problems = check_env(os.environ)
            for p in problems:
                print(p, file=sys.stderr)
            if not problems:
                print("environment OK")
            return 1 if problems else 0
        if command == "dev":
            from devstack.dev import run_dev

            return run_dev()
        if command == "incident":
            from devstack.incidents import main as incident

            return incident(argv[1:])
    except StackError as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 2
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main())
