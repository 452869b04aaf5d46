"""An operator's ad-hoc queries while runs go on: `python -m tests.hosts.query_loop N` runs N queries
through `python -m pipelines.query` (in this process, the command's own main) against the store the
environment names, a few every second, and prints {"queries": N, "failed": F} as its last line."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time

QUERIES = (
    "SELECT status, count(*) AS n FROM email_messages GROUP BY status ORDER BY status",
    "SELECT event_type, count(*) AS n FROM email_events GROUP BY 1 ORDER BY 1",
    "SELECT verified, count(*) AS n FROM email_addresses GROUP BY 1 ORDER BY 1",
    "SELECT m.status, count(e.event_id) AS events FROM email_messages m LEFT JOIN email_events e "
    "USING (message_id) GROUP BY 1 ORDER BY 1",
    "SELECT outcome, count(*) AS n FROM stripe_events GROUP BY 1 ORDER BY 1",
    "SELECT status, count(*) AS n FROM stripe_subscriptions GROUP BY 1 ORDER BY 1",
)


def main(argv: list[str]) -> int:
    from pipelines.query import main as query

    n = int(argv[0]) if argv else 100
    failed, errors = 0, []
    for i in range(n):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = query([QUERIES[i % len(QUERIES)]])
        if code != 0:
            failed += 1
            errors.append(err.getvalue()[-300:])
        time.sleep(0.2)
    for e in errors[:5]:
        print(e, file=sys.stderr)
    print(json.dumps({"queries": n, "failed": failed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
