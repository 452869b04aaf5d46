"""The asset store: report tables (DuckDB tables) published as one Parquet object each, where any
host and any operator can read them (docs/asset-store.md).

    store = AssetStore.from_url("s3://mailroom-assets/reports")   # or a directory: "/srv/assets"
    store.publish(conn, "email_sends_daily")        # the DuckDB table -> <url>/email_sends_daily.parquet
    store.load(conn, "ses_reputation")              # the object -> the (empty) DuckDB table
    store.attach_views(conn, ["email_sends_daily"]) # readers: a view per object (an Arrow replacement scan)

A publish replaces the object whole: on S3 one PUT (an object appears complete or not at all), in a
directory a rename over the old file. A read is one GET of the whole object (or one open of the
file), so a reader sees one version, never two mixed: Arrow's own S3 reader fetches a Parquet file
in ranged GETs (its footer, then its column chunks), which a republish in between can tear.

Each object has a version (the S3 ETag; in a directory the SHA-256 of the bytes). `load` returns
it and `publish(..., expect=version)` writes only if the object is still that version (S3's
conditional PUT, If-Match / If-None-Match), else raises AssetConflict: a table that appends
(ses_reputation keeps a row per computation) loses no row to a concurrent publisher.

The store knows no table: the caller names them (and gives the empty tables' DDL to attach_views).
S3 (pipelines/store/s3.py) takes its endpoint from AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3), which
points it at moto locally.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

SUFFIX = ".parquet"
ANY = object()   # publish(expect=ANY): overwrite whatever version is there
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class AssetConflict(RuntimeError):
    """The object changed since it was loaded: another publisher wrote it first."""


class Backend(Protocol):
    def get(self, name: str) -> tuple[bytes, str] | None: ...
    def put(self, name: str, data: bytes, expect: object) -> str: ...
    def describe(self, name: str) -> str: ...


def _check_name(table: str) -> str:
    if not _NAME.match(table):
        raise ValueError(f"not a table name: {table!r}")
    return table


def encode(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def decode(data: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(data))


@dataclass
class Version:
    """What `load` and `read` saw: the object's version (None: there was no object)."""
    table: str
    version: str | None
    rows: int
    size: int


class AssetStore:
    def __init__(self, backend: Backend, url: str):
        self.backend = backend
        self.url = url

    @classmethod
    def from_url(cls, url: str, *, s3_client: Any = None, region: str | None = None) -> AssetStore:
        """`s3://bucket/prefix` (the AWS SDK's endpoint and credentials; `s3_client` to pass one) or a
        directory path (`file:///path` or `/path`, created if absent)."""
        if url.startswith("s3://"):
            bucket, _, prefix = url[len("s3://"):].partition("/")
            if not bucket:
                raise ValueError(f"no bucket in the asset store URL {url!r}")
            from pipelines.store.s3 import S3Backend, s3_client_for

            return cls(S3Backend(bucket, prefix.strip("/"), s3_client or s3_client_for(region)), url)
        if "://" in url and not url.startswith("file://"):
            raise ValueError(f"the asset store URL must be s3://bucket/prefix or a directory (got {url!r})")
        return cls(DirectoryBackend(Path(url.removeprefix("file://"))), url)

    def location(self, table: str) -> str:
        return self.backend.describe(_check_name(table) + SUFFIX)

    # --- writers --------------------------------------------------------------------------

    def publish(self, conn: Any, table: str, *, expect: object = ANY) -> Version:
        """Write the DuckDB table `table` (all its rows, in its order) as the one object
        `<url>/<table>.parquet`, atomically. `expect`: the version `load` returned (None: no object
        may exist yet); AssetConflict if the object is another version by now."""
        data = conn.sql(f'SELECT * FROM "{_check_name(table)}"').to_arrow_table()
        body = encode(data)
        return Version(table, self.backend.put(table + SUFFIX, body, expect), data.num_rows, len(body))

    def load(self, conn: Any, table: str) -> Version:
        """Insert the object's rows into the DuckDB table `table` (which exists; normally empty),
        columns by name. No object: nothing inserted, version None."""
        data, seen = self.read(table)
        if data is not None and data.num_rows:
            conn.register("__asset_rows", data)
            try:
                conn.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM __asset_rows')
            finally:
                conn.unregister("__asset_rows")
        return seen

    # --- readers --------------------------------------------------------------------------

    def read(self, table: str) -> tuple[pa.Table | None, Version]:
        """The object as an Arrow table and its version ((None, version None) when absent)."""
        got = self.backend.get(_check_name(table) + SUFFIX)
        if got is None:
            return None, Version(table, None, 0, 0)
        data, version = got
        decoded = decode(data)
        return decoded, Version(table, version, decoded.num_rows, len(data))

    def attach_views(self, conn: Any, tables: Iterable[str],
                     empty_ddl: Mapping[str, str] | None = None) -> dict[str, Version]:
        """A view named after each table over its object's rows (held in memory as Arrow; DuckDB
        reads it by replacement scan, no extension needed). A table with no object yet gets
        `empty_ddl[table]` run (the statement making it as an empty table) or, without
        one, no view."""
        seen = {}
        for table in tables:
            data, seen[table] = self.read(table)
            if data is not None:
                conn.register(table, data)
            elif empty_ddl and table in empty_ddl:
                conn.execute(empty_ddl[table])
        return seen


# --- a directory (tests, one host's dev stack) -----------------------------------------------

class DirectoryBackend:
    def __init__(self, root: Path):
        self.root = root

    def describe(self, name: str) -> str:
        return str(self.root / name)

    def get(self, name: str) -> tuple[bytes, str] | None:
        try:
            data = (self.root / name).read_bytes()   # one open: the file a rename left, whole
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def put(self, name: str, data: bytes, expect: object) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / name
        temp = self.root / f".{name}.{os.getpid()}.{id(data):x}.tmp"
        with open(temp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())   # the bytes are on disk before the rename makes them the table
        try:
            # The lock makes check-and-replace one step between publishers of this directory.
            with open(self.root / ".publish.lock", "a+b") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if expect is not ANY:
                    current = self.get(name)
                    now = current[1] if current else None
                    if now != expect:
                        raise AssetConflict(f"{target} changed since it was loaded "
                                            f"(expected {'no object' if expect is None else expect})")
                os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        return hashlib.sha256(data).hexdigest()
