"""How an Arrow batch reaches PostgreSQL: COPY (CSV written by Arrow, or row by row) vs executemany.

    python -m bench.store_postgres_load --rows 10000 --repeat 5 [--url postgresql://postgres@127.0.0.1/postgres]

Each way loads the same batch (the shape of an email_messages claim: 6 text columns, a timestamp,
an integer, one NULL column) into a fresh temporary table inside one transaction, then rolls back.
Prints the median seconds and rows/s of each; pipelines/store/postgres.py uses the fastest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
import uuid

import psycopg

from pipelines.store.postgres import PostgresConnection, copy_into
from pipelines.store.write import INT, STR, TS, arrow

COLUMNS = "request_id text, to_address text, kind text, status text, subject text, transport text, " \
          "created_at timestamptz, attempts integer, error text"


def batch(n: int):
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    return arrow(request_id=(STR, [f"req-{uuid.uuid4().hex}" for _ in range(n)]),
                 to_address=(STR, [f"user{i}@example.com" for i in range(n)]),
                 kind=(STR, ["password-reset"] * n), status=(STR, ["pending"] * n),
                 subject=(STR, [f"Reset your password, it's {i}% done" for i in range(n)]),
                 transport=(STR, ["smtp"] * n), created_at=(TS, [t0 + dt.timedelta(seconds=i) for i in range(n)]),
                 attempts=(INT, [i % 3 for i in range(n)]), error=(STR, [None] * n))


def _fresh(raw):
    raw.execute("DROP TABLE IF EXISTS pg_temp.bench_rows")
    raw.execute(f"CREATE TEMPORARY TABLE bench_rows ({COLUMNS})")


def copy_csv(raw, rows):
    copy_into(raw, "bench_rows", rows)


def copy_row_by_row(raw, rows):
    names = ", ".join(rows.column_names)
    with raw.cursor().copy(f"COPY bench_rows ({names}) FROM STDIN") as copy:
        for row in zip(*(c.to_pylist() for c in rows.columns)):
            copy.write_row(row)


def executemany(raw, rows):
    names = ", ".join(rows.column_names)
    marks = ", ".join(["%s"] * rows.num_columns)
    with raw.cursor() as cur:
        cur.executemany(f"INSERT INTO bench_rows ({names}) VALUES ({marks})",
                        list(zip(*(c.to_pylist() for c in rows.columns))))


def with_rows_path(raw, rows):
    """What write.with_rows does: temp table `rows` by COPY, one set-wise INSERT, drop."""
    conn = PostgresConnection(raw)
    conn.with_rows("INSERT INTO bench_rows SELECT * FROM rows", rows)


WAYS = {"copy_csv": copy_csv, "copy_row_by_row": copy_row_by_row, "executemany": executemany,
        "with_rows (copy_csv + INSERT ... SELECT)": with_rows_path}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_postgres_load")
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    rows = batch(args.rows)
    results = {}
    with psycopg.connect(args.url, autocommit=True) as raw:
        for name, way in WAYS.items():
            times = []
            for _ in range(args.repeat):
                raw.execute("BEGIN")
                _fresh(raw)
                began = time.perf_counter()
                way(raw, rows)
                times.append(time.perf_counter() - began)
                count = raw.execute("SELECT count(*) FROM bench_rows").fetchone()[0]
                raw.execute("ROLLBACK")
                assert count == args.rows, (name, count)
            median = statistics.median(times)
            results[name] = {"median_seconds": round(median, 4), "rows_per_second": round(args.rows / median)}
            print(f"{name:42s} {median * 1000:9.1f} ms  {args.rows / median:12,.0f} rows/s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": args.rows, "repeat": args.repeat, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
