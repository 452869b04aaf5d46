"""DuckLake for the report tables, measured the way bench/asset_store.py measures the asset store.

DuckLake cannot load in the project's DuckDB (2.0.1 loads no extension), so this runs it in a
separate virtual environment with DuckDB 1.5.5 and the extensions' registry packages:

    python -m venv /tmp/ducklake-venv
    /tmp/ducklake-venv/bin/pip install duckdb==1.5.5 duckdb-extension-ducklake==1.5.5 \\
        duckdb-extension-postgres-scanner==1.5.5 duckdb-extension-httpfs==1.5.5
    python -m bench.ducklake_compare --python /tmp/ducklake-venv/bin/python [--sizes 1000,10000,100000,500000]
        [--repeat 5] [--readers 2] [--reads 100] [--out bench/results/ducklake_compare.json]

The project's Python starts a moto server, makes a bucket and a PostgreSQL database (the DuckLake
catalog), then runs this file under `--python` in `--inner` mode, which uses DuckDB alone:
publish = DELETE + INSERT of the table in one DuckLake transaction; read = a fresh connection that
loads the extensions, attaches the lake and counts the rows (and the count alone on an attached
connection). Then reader processes read while a writer republishes, counting failures.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPORT = """(day DATE, kind VARCHAR, sent BIGINT, delivered BIGINT, bounced BIGINT,
             delivery_rate DOUBLE, bounce_rate DOUBLE, computed_at TIMESTAMPTZ)"""


def _fill(n: int, tag: str) -> str:
    return (f"SELECT DATE '2020-01-01' + (range // 20)::INTEGER, '{tag}' || (range % 20), range * 7 % 1000, "
            f"range * 5 % 900, range % 13, (range % 97) / 97, (range % 13) / 1000, "
            f"TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(range) FROM range({n})")


def lake(cfg: dict):
    import duckdb

    conn = duckdb.connect()
    site = os.path.dirname(os.path.dirname(duckdb.__file__))
    for name in ("httpfs", "postgres_scanner", "ducklake"):
        conn.execute(f"LOAD '{glob.glob(f'{site}/duckdb_extension_*/extensions/*/{name}.duckdb_extension')[0]}'")
    conn.execute(f"""CREATE SECRET (TYPE s3, KEY_ID 'testing', SECRET 'testing', REGION 'us-east-1',
                     ENDPOINT '{cfg["endpoint"]}', URL_STYLE 'path', USE_SSL false)""")
    conn.execute(f"ATTACH 'ducklake:postgres:{cfg['catalog']}' AS lake (DATA_PATH '{cfg['data_path']}')")
    return conn


def inner_latency(cfg: dict) -> list[dict]:
    out = []
    conn = lake(cfg)
    for size in cfg["sizes"]:
        conn.execute(f"CREATE OR REPLACE TABLE lake.r{size} {REPORT}")
        conn.execute(f"CREATE OR REPLACE TEMP TABLE src AS {_fill(size, 'x')}")
        publish, attach_read, read = [], [], []
        for _ in range(cfg["repeat"]):
            began = time.perf_counter()
            conn.execute("BEGIN")
            conn.execute(f"DELETE FROM lake.r{size}")
            conn.execute(f"INSERT INTO lake.r{size} SELECT * FROM src")
            conn.execute("COMMIT")
            publish.append(time.perf_counter() - began)
            began = time.perf_counter()
            reader = lake(cfg)
            assert reader.execute(f"SELECT count(*) FROM lake.r{size}").fetchone()[0] == size
            attach_read.append(time.perf_counter() - began)
            began = time.perf_counter()
            assert reader.execute(f"SELECT count(*), sum(sent) FROM lake.r{size}").fetchone()[0] == size
            read.append(time.perf_counter() - began)
            reader.close()
        out.append({"store": "ducklake (postgres catalog, s3 data)", "rows": size,
                    "publish_ms": round(statistics.median(publish) * 1000, 2),
                    "read_ms_with_attach": round(statistics.median(attach_read) * 1000, 2),
                    "read_ms_attached": round(statistics.median(read) * 1000, 2)})
        print(json.dumps(out[-1]), flush=True)
    return out


def inner_reader(cfg: dict) -> None:
    failed = torn = 0
    errors: dict[str, int] = {}
    for _ in range(cfg["reads"]):
        try:
            conn = lake(cfg)
            kinds, n = conn.execute("SELECT count(DISTINCT kind[1]), count(*) FROM lake.rc").fetchone()
            if kinds != 1 or n not in (cfg["small"], cfg["large"]):
                torn += 1
            conn.close()
        except Exception as exc:   # noqa: BLE001 - every failure is counted, by its type
            failed += 1
            key = f"{type(exc).__name__}: {str(exc)[:100]}"
            errors[key] = errors.get(key, 0) + 1
    print(json.dumps({"failed": failed, "torn": torn, "errors": errors}), flush=True)


def inner_concurrent(cfg: dict) -> dict:
    conn = lake(cfg)
    conn.execute(f"CREATE OR REPLACE TABLE lake.rc {REPORT}")
    conn.execute(f"CREATE TEMP TABLE small AS {_fill(cfg['small'], 's')}")
    conn.execute(f"CREATE TEMP TABLE large AS {_fill(cfg['large'], 'L')}")
    conn.execute("INSERT INTO lake.rc SELECT * FROM small")
    procs = [subprocess.Popen([sys.executable, __file__, "--inner", "reader", "--config", json.dumps(cfg)],
                              stdout=subprocess.PIPE, text=True) for _ in range(cfg["readers"])]
    publishes, began = 0, time.perf_counter()
    while any(p.poll() is None for p in procs):
        conn.execute("BEGIN")
        conn.execute("DELETE FROM lake.rc")
        conn.execute(f"INSERT INTO lake.rc SELECT * FROM {'large' if publishes % 2 == 0 else 'small'}")
        conn.execute("COMMIT")
        publishes += 1
    results = [json.loads(p.stdout.read().strip().splitlines()[-1]) for p in procs]
    errors: dict[str, int] = {}
    for r in results:
        for k, n in r["errors"].items():
            errors[k] = errors.get(k, 0) + n
    row = {"reader": "ducklake (attach + SELECT per read)", "readers": cfg["readers"],
           "reads": cfg["readers"] * cfg["reads"], "publishes": publishes,
           "seconds": round(time.perf_counter() - began, 2), "failed": sum(r["failed"] for r in results),
           "torn": sum(r["torn"] for r in results), "errors": errors}
    print(json.dumps(row), flush=True)
    return row


def outer(args) -> int:
    import psycopg

    from bench.asset_store import start_moto, s3_client
    from tests.servers import migrated_pg_database   # a fresh database (the migrations are harmless here)

    moto, endpoint = start_moto()
    try:
        s3_client(endpoint).create_bucket(Bucket="bench-lake")
        with migrated_pg_database() as url:
            parts = psycopg.conninfo.conninfo_to_dict(url)
            cfg = {"endpoint": endpoint.removeprefix("http://"), "data_path": "s3://bench-lake/lake/",
                   "catalog": f"dbname={parts['dbname']} host={parts['host']} port={parts['port']} user={parts['user']}",
                   "sizes": [int(s) for s in args.sizes.split(",")], "repeat": args.repeat, "readers": args.readers,
                   "reads": args.reads, "small": 2_000, "large": 150_000}
            proc = subprocess.run([args.python, __file__, "--inner", "all", "--config", json.dumps(cfg)],
                                  capture_output=True, text=True, timeout=3000)
            if proc.returncode:
                print(proc.stdout, proc.stderr[-3000:], file=sys.stderr)
                return proc.returncode
            result = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        moto.terminate()
        moto.wait()
    result["command"] = "python -m bench.ducklake_compare " + " ".join(sys.argv[1:])
    result["load"] = os.getloadavg()[0]
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ducklake_compare")
    parser.add_argument("--python", default="/tmp/ducklake-venv/bin/python")
    parser.add_argument("--sizes", default="1000,10000,100000,500000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--reads", type=int, default=100)
    parser.add_argument("--out", default="bench/results/ducklake_compare.json")
    parser.add_argument("--inner", choices=["all", "reader"])
    parser.add_argument("--config")
    args = parser.parse_args()
    if args.inner == "reader":
        inner_reader(json.loads(args.config))
        return 0
    if args.inner == "all":
        import duckdb

        cfg = json.loads(args.config)
        out = {"duckdb": duckdb.__version__, "latency": inner_latency(cfg), "concurrent": inner_concurrent(cfg)}
        print(json.dumps(out))
        return 0
    return outer(args)


if __name__ == "__main__":
    sys.exit(main())
