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
def fresh_pg_database() -> Iterator[str]:
    """A new database mailroom_test_<epoch>_<random> on the local server, dropped afterwards; yields
    its URL. Databases of killed sessions older than 2 h are swept."""
    import psycopg

    require_server("PostgreSQL", PG_HOST, PG_PORT)
    now = int(time.time())
    name = f"{DB_PREFIX}{now}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
        for (stale,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [DB_PREFIX + "%"]):
            created = stale[len(DB_PREFIX):].split("_")[0]
            if created.isdigit() and int(created) < now - 7200:
                admin.execute(f'DROP DATABASE IF EXISTS "{stale}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield pg_url(name)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def migrated_pg_database() -> Iterator[str]:
    """fresh_pg_database() with every migration applied (pipelines/store/migrations/postgres/)."""
    import psycopg

    from pipelines.store import migrate

    with fresh_pg_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate.migrate(conn)
        yield url
