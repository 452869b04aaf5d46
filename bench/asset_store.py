"""The asset store and the ledger snapshot, measured (docs/asset-store.md).

    python -m bench.asset_store [--sizes 1000,10000,100000,500000] [--repeat 5] [--readers 2]
                                [--reads 100] [--snapshot-rows 200000] [--out bench/results/asset_store.json]

1. Publish and read latency per asset size: a report-shaped table (a date, a kind, counts, rates,
   a timestamp) of each size, published from DuckDB (DuckDB -> Arrow -> Parquet -> one PUT) and read
   back (one GET -> Arrow -> a DuckDB view -> count). On moto's S3 (a moto server this starts) and
   in a directory; on S3 also Arrow's own S3 filesystem (pyarrow.fs.S3FileSystem) for comparison.
2. Readers during republishes: reader processes read the object `--reads` times each while a writer
   republishes two versions of different sizes without pause. Counted: failed reads (an error) and
   torn reads (rows of both versions, or a row count of neither). Once with the store's reader (one
   GET), once with Arrow's S3 reader (a HEAD, then ranged GETs).
3. Snapshot: `--snapshot-rows` email_messages rows in a fresh PostgreSQL database copied into an
   in-memory DuckDB (pipelines/store/snapshot.py), rows/s; interleaved with the same copy parsed
   by Arrow's CSV reader instead of DuckDB's, and the rows by a plain cursor (fetchall) into Arrow.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.schema import create_tables
from pipelines.store.asset_store import AssetStore, encode

REPORT = """CREATE TABLE r (day DATE, kind VARCHAR, sent BIGINT, delivered BIGINT, bounced BIGINT,
                            delivery_rate DOUBLE, bounce_rate DOUBLE, computed_at TIMESTAMPTZ)"""
BUCKET = "bench-assets"


def report_table(rows: int, tag: str = "x") -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    conn.execute(REPORT)
    conn.execute(f"""INSERT INTO r SELECT DATE '2020-01-01' + (range // 20)::INTEGER, '{tag}' || (range % 20),
                     range * 7 % 1000, range * 5 % 900, range % 13, (range % 97) / 97, (range % 13) / 1000,
                     TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(range) FROM range({rows})""")
    return conn


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def start_moto() -> tuple[subprocess.Popen, str]:
    from devstack.stack import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "devstack.moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    import urllib.request
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/reset-auth", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    return proc, endpoint


def s3_client(endpoint: str):
    from devstack.stack import aws_client

    return aws_client(endpoint, "s3", max_pool_connections=16)


def arrow_fs(endpoint: str) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(endpoint_override=endpoint.removeprefix("http://"), scheme="http", region="us-east-1",
                             access_key="testing", secret_key="testing")


def latency(stores: dict[str, AssetStore], endpoint: str, sizes: list[int], repeat: int) -> list[dict]:
    fs = arrow_fs(endpoint)
    out = []
    for size in sizes:
        source = report_table(size)
        for name, store in stores.items():
            publish, read = [], []
            for _ in range(repeat):
                began = time.perf_counter()
                version = store.publish(source, "r")
                publish.append(time.perf_counter() - began)
                reader = duckdb.connect()
                began = time.perf_counter()
                store.attach_views(reader, ["r"])
                assert reader.execute("SELECT count(*) FROM r").fetchone()[0] == size
                read.append(time.perf_counter() - began)
                reader.close()
            out.append({"store": name, "rows": size, "bytes": version.size, "publish_ms": median_ms(publish),
                        "read_ms": median_ms(read)})
            print(json.dumps(out[-1]), flush=True)
        # Arrow's own S3 filesystem: write_table to the bucket, read_table back.
        publish, read = [], []
        data = source.sql("SELECT * FROM r").to_arrow_table()
        for _ in range(repeat):
            began = time.perf_counter()
            pq.write_table(source.sql("SELECT * FROM r").to_arrow_table(), f"{BUCKET}/arrowfs/r.parquet",
                           filesystem=fs, compression="zstd")
            publish.append(time.perf_counter() - began)
            began = time.perf_counter()
            got = pq.read_table(f"{BUCKET}/arrowfs/r.parquet", filesystem=fs)
            reader = duckdb.connect()
            reader.register("r", got)
            assert reader.execute("SELECT count(*) FROM r").fetchone()[0] == size
            read.append(time.perf_counter() - began)
            reader.close()
        out.append({"store": "s3 via pyarrow.fs.S3FileSystem", "rows": size, "bytes": len(encode(data)),
                    "publish_ms": median_ms(publish), "read_ms": median_ms(read)})
        print(json.dumps(out[-1]), flush=True)
    return out


SMALL, LARGE = 2_000, 150_000


def _reader(kind: str, url: str, endpoint: str, reads: int, queue) -> None:
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    store = AssetStore.from_url(url)
    fs = arrow_fs(endpoint)
    failed = torn = 0
    errors: dict[str, int] = {}
    for _ in range(reads):
        try:
            if kind == "store (one GET)":
                data, _ = store.read("r")
            else:
                data = pq.read_table(url.removeprefix("s3://") + "/r.parquet", filesystem=fs)
            tags = set(data.column("kind").to_pylist())
            tags = {t[0] for t in tags}
            expected = {"s": SMALL, "L": LARGE}
            if len(tags) != 1 or data.num_rows != expected[tags.pop()]:
                torn += 1
        except Exception as exc:   # noqa: BLE001 - every failure is counted, by its type
            failed += 1
            key = f"{type(exc).__name__}: {str(exc)[:80]}"
            errors[key] = errors.get(key, 0) + 1
    queue.put({"failed": failed, "torn": torn, "errors": errors})


def concurrent(endpoint: str, readers: int, reads: int) -> list[dict]:
    url = f"s3://{BUCKET}/concurrent-{uuid.uuid4().hex[:6]}"
    store = AssetStore.from_url(url, s3_client=s3_client(endpoint))
    versions = [report_table(SMALL, "s"), report_table(LARGE, "L")]
    store.publish(versions[0], "r")
    out = []
    for kind in ("store (one GET)", "pyarrow.fs.S3FileSystem (ranged GETs)"):
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        procs = [ctx.Process(target=_reader, args=(kind, url, endpoint, reads, queue)) for _ in range(readers)]
        for p in procs:
            p.start()
        publishes = 0
        began = time.perf_counter()
        results = []
        while len(results) < readers:
            store.publish(versions[publishes % 2], "r")
            publishes += 1
            while not queue.empty():
                results.append(queue.get())
        for p in procs:
            p.join()
        errors: dict[str, int] = {}
        for r in results:
            for k, n in r["errors"].items():
                errors[k] = errors.get(k, 0) + n
        row = {"reader": kind, "readers": readers, "reads": readers * reads, "publishes": publishes,
               "seconds": round(time.perf_counter() - began, 2),
               "failed": sum(r["failed"] for r in results), "torn": sum(r["torn"] for r in results),
               "errors": errors}
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def arrow_csv_copy(raw, duck, table: str) -> int:
    """The first version of the snapshot's copy, for comparison: the CSV held in memory, parsed by
    Arrow's CSV reader with every column as text, cast to the column types by DuckDB."""
    import io

    import pyarrow.csv as pacsv

    from pipelines.store.snapshot import copy_statement, duckdb_columns

    columns = duckdb_columns(duck, table)
    buf = bytearray()
    with raw.cursor().copy(copy_statement(table, columns)) as copy:
        for chunk in copy:
            buf += chunk
    names = [n for n, _ in columns]
    data = pacsv.read_csv(io.BytesIO(bytes(buf)), read_options=pacsv.ReadOptions(column_names=names),
                          parse_options=pacsv.ParseOptions(newlines_in_values=True),
                          convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                               strings_can_be_null=True,
                                                               quoted_strings_can_be_null=False, null_values=[""]))
    duck.register("arrow_rows", data)
    casts = ", ".join(f'CAST("{n}" AS {t})' for n, t in columns)
    (n,), = duck.execute(f"INSERT INTO {table} SELECT {casts} FROM arrow_rows").fetchall()
    return n


def snapshot_rate(rows: int, repeat: int) -> dict:
    import psycopg

    from pipelines.store.postgres import PostgresDatabase
    from pipelines.store.snapshot import snapshot
    from tests.servers import migrated_pg_database

    with migrated_pg_database() as url:
        with psycopg.connect(url, autocommit=True) as raw:
            raw.execute(f"""INSERT INTO email_messages (request_id, to_address, kind, message_id, from_address, subject,
                                status, skip_reason, attempts, transport, created_at, sent_at, status_at, request_digest)
                SELECT 'req-' || g, 'user' || g || '@example.com', 'password-reset', 'ses-' || g, 'noreply@x.test',
                       'Reset your password, it''s ' || g || '% done', 'sent', NULL, g % 3, 'ses',
                       now() - g * interval '1 second', now(), now(), md5(g::text)
                FROM generate_series(1, {rows}) g""")
            raw.execute("VACUUM ANALYZE email_messages")
        times, fetch, arrow_csv = [], [], []
        with PostgresDatabase(url) as db:
            for _ in range(repeat):
                conn = duckdb.connect()
                create_tables(conn, ["email_messages"])
                with db.connect() as pg:
                    pg.raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    pg.raw.execute("SET LOCAL TimeZone = 'UTC'")
                    began = time.perf_counter()
                    assert arrow_csv_copy(pg.raw, conn, "email_messages") == rows
                    arrow_csv.append(time.perf_counter() - began)
                    pg.raw.execute("COMMIT")
                conn.close()
                conn = duckdb.connect()
                create_tables(conn, ["email_messages"])
                stats = snapshot(db, conn, ["email_messages"])
                assert conn.execute("SELECT count(*) FROM email_messages").fetchone()[0] == rows
                times.append(stats.seconds)
                conn.close()
                with db.connect() as pg:
                    began = time.perf_counter()
                    cur = pg.raw.execute("SELECT * FROM email_messages")
                    names = [d.name for d in cur.description]
                    pa.table(dict(zip(names, map(list, zip(*cur.fetchall())))))
                    fetch.append(time.perf_counter() - began)
        best = statistics.median(times)
        out = {"rows": rows, "columns": 17, "csv_bytes": stats.bytes, "snapshot_s": round(best, 3),
               "rows_per_s": round(rows / best),
               "arrow_csv_reader_s": round(statistics.median(arrow_csv), 3),
               "arrow_csv_rows_per_s": round(rows / statistics.median(arrow_csv)),
               "cursor_fetchall_to_arrow_s": round(statistics.median(fetch), 3),
               "cursor_rows_per_s": round(rows / statistics.median(fetch))}
        print(json.dumps(out), flush=True)
        return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.asset_store")
    parser.add_argument("--sizes", default="1000,10000,100000,500000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--reads", type=int, default=100)
    parser.add_argument("--snapshot-rows", type=int, default=200_000)
    parser.add_argument("--skip", default="", help="comma-separated phases to skip: latency,concurrent,snapshot "
                        "(a skipped phase keeps its figures from --out, with the command that measured them)")
    parser.add_argument("--out", default="bench/results/asset_store.json")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    moto, endpoint = start_moto()
    result: dict = {"command": "python -m bench.asset_store " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()[0],
                                "python": platform.python_version(), "duckdb": duckdb.__version__,
                                "pyarrow": pa.__version__}}
    try:
        client = s3_client(endpoint)
        client.create_bucket(Bucket=BUCKET)
        with tempfile.TemporaryDirectory() as tmp:
            s3 = AssetStore.from_url(f"s3://{BUCKET}/latency", s3_client=client)
            stores = {"s3 (asset store: one PUT / one GET)": s3, "directory": AssetStore.from_url(tmp)}
            if "latency" not in skip:
                result["latency"] = latency(stores, endpoint, [int(s) for s in args.sizes.split(",")], args.repeat)
        if "concurrent" not in skip:
            result["concurrent"] = concurrent(endpoint, args.readers, args.reads)
        if "snapshot" not in skip:
            result["snapshot"] = snapshot_rate(args.snapshot_rows, args.repeat)
    finally:
        moto.terminate()
        moto.wait()
    result["machine"]["load_after"] = os.getloadavg()[0]
    if skip and Path(args.out).exists():
        before = json.loads(Path(args.out).read_text())
        for phase in skip & set(before):
            result[phase] = before[phase]
            result.setdefault("kept_from", {})[phase] = before.get("kept_from", {}).get(phase, before["command"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
