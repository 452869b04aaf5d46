"""A fresh PostgreSQL database for one benchmark phase: created, migrated, dropped afterwards.

The server is BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres, the machine's
PostgreSQL 15). Each database is named mailroom_bench_<epoch>_<random>; ones left by a killed run
older than two hours are dropped when the next one is made (as tests/servers.py does for tests).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

SERVER_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = "mailroom_bench_"


@contextmanager
def migrated_database(server_url: str = SERVER_URL) -> Iterator[str]:
    """Yields the URL of a new database with every migration applied; drops it afterwards."""
    import psycopg

    from pipelines.store import migrate
    from tests.servers import scratch_database

    with scratch_database(server_url, PREFIX) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate.migrate(conn)
        yield url
