"""A fresh PostgreSQL database for one benchmark phase: created, migrated, dropped afterwards.

The server is BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres, the machine's
PostgreSQL 15). Each database is named mailroom_bench_<epoch>_<random>; ones left by a killed run
older than two hours are dropped when the next one is made (as tests/servers.py does for tests).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

SERVER_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = "mailroom_bench_"


def url_of(server_url: str, dbname: str) -> str:
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


@contextmanager
def migrated_database(server_url: str = SERVER_URL) -> Iterator[str]:
    """Yields the URL of a new database with every migration applied; drops it afterwards."""
    import psycopg

    from pipelines.store import migrate

    now = int(time.time())
    name = f"{PREFIX}{now}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        for (stale,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [PREFIX + "%"]):
            created = stale[len(PREFIX):].split("_")[0]
            if created.isdigit() and int(created) < now - 7200:
                admin.execute(f'DROP DATABASE IF EXISTS "{stale}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = url_of(server_url, name)
            with psycopg.connect(url, autocommit=True) as conn:
                migrate.migrate(conn)
            yield url
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
