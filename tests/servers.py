"""Servers the integration tests need but do not start (PostgreSQL, RabbitMQ): skip when one is
unreachable, or fail when CI=true, where every server must be there."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
DB_PREFIX = "mailroom_test_"


def require_server(name: str, host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} not reachable at {host}:{port}: CI=true requires it", pytrace=False)
        pytest.skip(f"{name} not reachable at {host}:{port}: tests that need it are skipped")


def pg_url(dbname: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"


@contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new database <prefix><epoch>_<random> on the server of `admin_url`, dropped afterwards;
    yields its URL. Databases of the same prefix older than 2 h (a killed session's) are swept."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    now = int(time.time())
    name = f"{prefix}{now}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for (stale,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [prefix + "%"]):
            created = stale[len(prefix):].split("_")[0]
            if created.isdigit() and int(created) < now - 7200:
                admin.execute(f'DROP DATABASE IF EXISTS "{stale}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            parts = urlsplit(admin_url)
            yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new database mailroom_test_<epoch>_<random> on the local server, dropped afterwards; yields
    its URL (skipped or, under CI=true, failed when the server is unreachable)."""
    require_server("PostgreSQL", PG_HOST, PG_PORT)
    with scratch_database(pg_url("postgres"), DB_PREFIX) as url:
        yield url


@contextmanager
def migrated_pg_database() -> Iterator[str]:
    """fresh_pg_database() with every migration applied (pipelines/store/migrations/postgres/)."""
    import psycopg

    from pipelines.store import migrate

    with fresh_pg_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate.migrate(conn)
        yield url
