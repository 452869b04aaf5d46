"""The code location's schema: every table and view, gathered from each domain's tables.py.

The store (pipelines/store/) and the DuckDB resource know no table; this module, beside
resource_defs.py, is where the domains' DDL meets them. Every statement is safe to run again
(IF NOT EXISTS / OR REPLACE) and every table exists, empty, from the first connection: the
resource runs ALL_DDL on its first write connection in each process, and `create(path)` (`make
dev` calls it before Dagster starts; by hand: `python -m pipelines.schema`) makes the file with
all of it, so ad-hoc readers find every table before any run. Assets fill tables; they never create them.

With MAILROOM_STORE=postgres the ledgers and input tables (LEDGER_TABLES) live in PostgreSQL instead,
created by versioned migrations (pipelines/store/migrations/postgres/, pipelines/store/migrate.py):
`python -m pipelines.schema` applies them there, and `configured_store()` refuses a database whose
migrations are not all applied.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

import duckdb

from pipelines import settings
from pipelines.billing import tables as billing
from pipelines.common import tables as common
from pipelines.email import tables as email
from pipelines.email_delivery import tables as email_delivery
from pipelines.store.store import Store
from resources.duckdb import DuckDBResource

ALL_DDL: tuple[str, ...] = (*common.TABLES, *email.TABLES, *email_delivery.TABLES, *billing.TABLES)

# The system of record: the tables PostgreSQL holds in the postgres profile. The reports built from
# them (email_sends_daily, billing_daily, ...) stay DuckDB tables.
LEDGER_TABLES: tuple[str, ...] = (
    "quarantine",
    "email_messages", "email_events", "email_addresses", "address_status_changes", "sns_control_messages",
    "stripe_events", "stripe_object_watermarks", "stripe_customers", "stripe_subscriptions",
    "stripe_subscription_items", "stripe_products", "stripe_prices", "stripe_invoices", "stripe_payment_methods",
    "stripe_payments", "stripe_credit_notes", "organizations", "organization_members",
    "billing_drift", "billing_reconcile_runs", "billing_notices",
)
# The reports: DuckDB tables built from the ledgers by the report assets. In the postgres profile they
# are built in an in-memory DuckDB and published to the asset store (pipelines/report_workspace.py).
REPORT_TABLES: tuple[str, ...] = (
    "email_sends_daily", "email_delivery_daily", "ses_reputation",
    "subscriptions_current", "billing_daily", "billing_leaks",
)
ENGINES = ("duckdb", "postgres")
_SUBJECT = re.compile(r"\b(?:TABLE(?: IF NOT EXISTS)?|VIEW|ON)\s+(\w+)", re.IGNORECASE)


class MailroomDuckDB(DuckDBResource):
    """The DuckDB resource with this code location's schema (ALL_DDL)."""

    def schema(self) -> Sequence[str]:
        return ALL_DDL


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    for ddl in ALL_DDL:
        conn.execute(ddl)


def subject(ddl: str) -> str:
    """The table or view a statement of ALL_DDL creates or changes (an index: its table)."""
    return _SUBJECT.search(ddl).group(1)


def creation(table: str) -> str:
    """The statement of ALL_DDL that makes `table` (the first that names it; ALTERs and indexes follow)."""
    return next(d for d in ALL_DDL if subject(d) == table)


def create_tables(conn: duckdb.DuckDBPyConnection, tables: Sequence[str]) -> None:
    """Only `tables` of the schema (their CREATE, ALTER and indexes), plus each view whose tables are
    all among them: a query of any other table fails instead of finding it empty."""
    wanted = set(tables)
    unknown = wanted - {subject(d) for d in ALL_DDL}
    if unknown:
        raise KeyError(f"not tables of the schema: {', '.join(sorted(unknown))}")
    for ddl in ALL_DDL:
        if subject(ddl) in wanted:
            conn.execute(ddl)
        elif re.search(r"\bVIEW\b", ddl[:60]):
            try:
                conn.execute(ddl)
            except duckdb.CatalogException:   # it reads a table not created here
                pass


def database(path: str, **settings_) -> MailroomDuckDB:
    """A DuckDB resource for `path` that creates this schema on its first write connection."""
    return MailroomDuckDB(path=path, **settings_)


def create(path: str) -> None:
    """Create the file at `path` with every table (idempotent): the resource's first connection
    runs the schema."""
    with Store(database(path).connect).transaction():
        pass


def engine(environ=None) -> str:
    """MAILROOM_STORE (default duckdb)."""
    name = settings.value("MAILROOM_STORE", environ) or "duckdb"
    if name not in ENGINES:
        raise settings.SettingsError(f"MAILROOM_STORE must be one of {', '.join(ENGINES)} (got {name!r})")
    return name


def database_url(environ=None) -> str:
    url = settings.value("DATABASE_URL", environ)
    if not url:
        raise settings.SettingsError("DATABASE_URL must be set when MAILROOM_STORE=postgres")
    return url


def described(url: str) -> str:
    """`host:port/dbname` of a PostgreSQL URL, never its password."""
    import psycopg

    parts = psycopg.conninfo.conninfo_to_dict(url)
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def configured_store(environ=None) -> Store:
    """The store MAILROOM_STORE names: the DuckDB file at DUCKDB_PATH, or PostgreSQL at DATABASE_URL
    (whose migrations must all be applied). The caller closes it (`with configured_store() as s:`);
    a PostgreSQL store's pool closes with it."""
    if engine(environ) == "duckdb":
        path = settings.value("DUCKDB_PATH", environ)
        if not path:
            raise settings.SettingsError("DUCKDB_PATH must be set when MAILROOM_STORE=duckdb")
        return Store(database(path).connect)
    from pipelines.store.postgres import PostgresDatabase   # psycopg only in the postgres profile

    return PostgresStore(PostgresDatabase(database_url(environ)))   # refuses an unmigrated database


class PostgresStore(Store):
    """A store on a PostgresDatabase of its own, closed (its pool with it) when the store closes."""

    def __init__(self, db) -> None:
        super().__init__(db.connect)
        self.db = db

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.db.close()


def main(argv: list[str] | None = None, environ=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.schema",
        description="Make the configured store ready (idempotent): MAILROOM_STORE=duckdb creates the DuckDB "
                    "file with every table; MAILROOM_STORE=postgres applies the pending migrations.")
    parser.add_argument("--db", default=settings.value("DUCKDB_PATH", environ), help="DuckDB file (default $DUCKDB_PATH)")
    parser.add_argument("--status", action="store_true", help="postgres: list the migrations and whether applied")
    args = parser.parse_args(argv)
    if engine(environ) == "postgres":
        return _migrate(database_url(environ), status=args.status)
    if not args.db:
        parser.error("no database: pass --db or set DUCKDB_PATH")
    create(args.db)
    print(f"schema ready: {args.db} ({len(ALL_DDL)} statements)")
    return 0


def _migrate(url: str, *, status: bool) -> int:
    from pipelines.store import migrate

    if status:
        for name, applied in migrate.status(url):
            print(f"{name}: {'applied' if applied else 'pending'}")
        return 0
    names = migrate.apply(url)
    print(f"schema ready: PostgreSQL {described(url)} "
          f"({'applied ' + ', '.join(names) if names else 'every migration already applied'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
