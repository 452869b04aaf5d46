"""Versioned migrations of the PostgreSQL system of record: numbered SQL files, each applied once.

    migrations/postgres/0001_ledgers.sql, 0002_....sql      (NNNN_words.sql, applied in order)

`migrate(conn)` applies every file not yet recorded in `schema_migrations` (version, name, sha256
checksum, applied_at), each in its own transaction together with its record, so a file is applied
whole or not at all. An advisory lock makes concurrent callers (two hosts deploying at once) take
turns: the second finds nothing left to do. Before applying anything it refuses to go on if a file
already applied has changed (checksum), or if the database records a version that no file has:
a released migration is never edited; a change is a new file.

`python -m pipelines.schema` runs it for MAILROOM_STORE=postgres (pipelines/schema.py).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

POSTGRES_MIGRATIONS = Path(__file__).resolve().parent / "migrations" / "postgres"
_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
LOCK_KEY = 0x6D61696C   # pg_advisory_xact_lock key shared by every migrating process ("mail")

RECORD_DDL = (POSTGRES_MIGRATIONS.parent / "schema_migrations.sql").read_text()


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations(folder: Path = POSTGRES_MIGRATIONS) -> list[Migration]:
    """The folder's migrations in version order; a misnamed .sql file or a repeated number is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        m = _FILE.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: a migration is named NNNN_words.sql (e.g. 0002_add_index.sql)")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} is also {found[version].name}")
        found[version] = Migration(version, path.name, path.read_text())
    return [found[v] for v in sorted(found)]


def applied(conn: psycopg.Connection) -> dict[int, tuple[str, str]]:
    """version -> (name, checksum) of what the database records (empty before the first run)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    if not exists:
        return {}
    return {v: (n, c) for v, n, c in conn.execute("SELECT version, name, checksum FROM schema_migrations")}


def verify(conn: psycopg.Connection, folder: Path = POSTGRES_MIGRATIONS) -> list[Migration]:
    """The migrations still to apply; raises if an applied one was edited or has no file."""
    files = {m.version: m for m in migrations(folder)}
    done = applied(conn)
    for version, (name, checksum) in sorted(done.items()):
        if version not in files:
            raise MigrationError(f"the database records migration {version} ({name}), which no file in "
                                 f"{folder} has: this code is older than the database")
        if files[version].checksum != checksum:
            raise MigrationError(f"{files[version].name} changed after it was applied (checksum "
                                 f"{checksum[:12]} recorded, {files[version].checksum[:12]} now): "
                                 "never edit an applied migration, add a new file")
    return [m for v, m in sorted(files.items()) if v not in done]


def migrate(conn: psycopg.Connection, folder: Path = POSTGRES_MIGRATIONS) -> list[str]:
    """Apply the pending migrations (idempotent); returns the names applied by this call.
    `conn` must not be inside a transaction."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise MigrationError("migrate() needs a connection outside any transaction")
    done: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
        conn.execute(RECORD_DDL)
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
            pending = verify(conn, folder)
            if not pending:
                return done
            step = pending[0]
            conn.execute(step.sql)
            conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                         [step.version, step.name, step.checksum])
            done.append(step.name)


def require_current(conn: psycopg.Connection, folder: Path = POSTGRES_MIGRATIONS) -> None:
    """Raise unless every migration is applied and unchanged (a store refuses a stale schema)."""
    pending = verify(conn, folder)
    if pending:
        raise MigrationError(f"{len(pending)} migration(s) not applied ({', '.join(m.name for m in pending)}): "
                             "run `MAILROOM_STORE=postgres python -m pipelines.schema`")


def apply(url: str, folder: Path = POSTGRES_MIGRATIONS) -> list[str]:
    """migrate() on its own connection to `url`."""
    with psycopg.connect(url, autocommit=True) as conn:
        return migrate(conn, folder)


def status(url: str, folder: Path = POSTGRES_MIGRATIONS) -> list[tuple[str, bool]]:
    """(file name, applied?) for every migration file; raises as verify() does."""
    with psycopg.connect(url, autocommit=True) as conn:
        verify(conn, folder)
        done = applied(conn)
    return [(m.name, m.version in done) for m in migrations(folder)]
