"""The asset store on moto's S3 and in a directory: round trip, absence, versions and conflicts, and
readers that never see a torn object while a writer republishes."""

from __future__ import annotations

import threading
import time
import uuid

import duckdb
import pytest

from pipelines.store.asset_store import AssetConflict, AssetStore

DDL = """CREATE TABLE r (day DATE, kind VARCHAR, n BIGINT, rate DOUBLE, ts TIMESTAMPTZ, ok BOOLEAN, i INTEGER)"""
ROWS = """INSERT INTO r VALUES
    ('2026-01-02', 'welcome', 3, 0.25, '2026-01-02 03:04:05.678901+00', true, 7),
    ('2026-01-03', '', NULL, NULL, NULL, NULL, NULL),
    ('2026-01-01', 'naïve, "quoted"\nline', -1, 1e-300, '1999-12-31 23:59:59.999999+05:30', false, -2147483648)"""


@pytest.fixture(params=["directory", "s3"])
def assets(request, tmp_path):
    if request.param == "directory":
        return AssetStore.from_url(str(tmp_path / "assets"))
    local_stack = request.getfixturevalue("local_stack")
    return AssetStore.from_url(f"s3://mailroom-assets/t-{uuid.uuid4().hex[:8]}", s3_client=local_stack.client("s3"))


def fresh(rows: bool = True) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    conn.execute(DDL)
    if rows:
        conn.execute(ROWS)
    return conn


def test_round_trip_keeps_rows_order_types_and_null_apart_from_empty(assets):
    source = fresh()
    published = assets.publish(source, "r")
    assert published.rows == 3 and published.version
    target = fresh(rows=False)
    loaded = assets.load(target, "r")
    assert loaded.version == published.version and loaded.rows == 3
    assert target.execute("FROM r").fetchall() == source.execute("FROM r").fetchall()
    assert target.execute("SELECT count(*) FROM r WHERE kind = ''").fetchone()[0] == 1
    assert target.execute("SELECT typeof(ts), typeof(day) FROM r LIMIT 1").fetchone() == ("TIMESTAMP WITH TIME ZONE", "DATE")


def test_an_absent_object_is_an_empty_table(assets):
    conn = fresh(rows=False)
    assert assets.load(conn, "r").version is None
    assert conn.execute("SELECT count(*) FROM r").fetchone()[0] == 0
    reader = duckdb.connect()
    assert assets.attach_views(reader, ["r"])["r"].version is None
    with pytest.raises(duckdb.CatalogException):
        reader.execute("FROM r")
    assets.attach_views(reader, ["r"], empty_ddl={"r": DDL})
    assert reader.execute("SELECT count(*) FROM r").fetchone()[0] == 0


def test_views_read_the_published_rows(assets):
    assets.publish(fresh(), "r")
    reader = duckdb.connect()
    assets.attach_views(reader, ["r"])
    assert reader.execute("SELECT sum(n) FROM r").fetchone()[0] == 2
    assert reader.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'r'").fetchone()[0] == "VIEW"


def test_a_publish_conditional_on_a_stale_version_conflicts(assets):
    first = assets.publish(fresh(), "r", expect=None)
    with pytest.raises(AssetConflict):
        assets.publish(fresh(), "r", expect=None)          # no object expected, one exists
    changed = fresh()
    changed.execute("DELETE FROM r WHERE n = 3")
    second = assets.publish(changed, "r", expect=first.version)
    assert second.version != first.version
    with pytest.raises(AssetConflict):
        assets.publish(fresh(), "r", expect=first.version)  # someone published `second` since
    assert assets.read("r")[1].version == second.version
    # A version is the content's (S3's ETag of a single PUT is its MD5): the same rows republished
    # keep it, and a publisher expecting it loses nothing.
    assert assets.publish(changed, "r", expect=second.version).version == second.version


def test_readers_see_a_whole_version_while_a_writer_republishes(assets):
    # Two versions of different sizes: a torn read is a Parquet error or a mixed table.
    small, large = duckdb.connect(), duckdb.connect()
    small.execute("CREATE TABLE r AS SELECT 'small' AS v, range AS n FROM range(1000)")
    large.execute("CREATE TABLE r AS SELECT 'large' AS v, range AS n, md5(range::VARCHAR) AS pad FROM range(60000)")
    assets.publish(small, "r")
    stop = threading.Event()
    publishes = 0

    def writer():
        nonlocal publishes
        while not stop.is_set():
            assets.publish(large if publishes % 2 == 0 else small, "r")
            publishes += 1

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    try:
        deadline = time.monotonic() + 60
        while (len(seen) < 60 or publishes < 6) and time.monotonic() < deadline:
            data, _ = assets.read("r")
            values = set(data.column("v").to_pylist())
            assert len(values) == 1 and data.num_rows == {"small": 1000, "large": 60000}[values.pop()]
            seen.append(data.num_rows)
    finally:
        stop.set()
        thread.join()
    assert publishes >= 4 and len(set(seen)) == 2, (publishes, set(seen))


def test_the_url_forms(stack_env, tmp_path):
    # boto3 finds moto through AWS_ENDPOINT_URL (set by stack_env), as the code location does.
    assets = AssetStore.from_url("s3://mailroom-assets/url-test")
    assets.publish(fresh(), "r")
    assert assets.location("r") == "s3://mailroom-assets/url-test/r.parquet"
    assert assets.read("r")[1].rows == 3
    assert AssetStore.from_url(f"file://{tmp_path}").location("r") == str(tmp_path / "r.parquet")
    for bad in ("http://x/y", "s3:///nobucket"):
        with pytest.raises(ValueError):
            AssetStore.from_url(bad)
    with pytest.raises(ValueError, match="not a table name"):
        assets.read("r; DROP")
