"""Load the platform's organisations (and their members) into the ledgers from CSV or Parquet.

    python -m pipelines.billing.load_organizations organizations.csv [--members members.parquet] [--db PATH|URL]

The platform owns these tables; this loader is for operators and demos. Each file is upserted
by its key (organizations.id; organization_members (organization_id, user_id)); rows that fail
a check (missing key, unknown type, a member of an unknown organisation) are reported by line
and skipped, the rest are loaded. With --replace-members, an organisation's member list in the
file replaces the one in the table (members who left are removed).

On DuckDB the file is staged by DuckDB's own reader; on PostgreSQL it is read by Arrow (a CSV's
columns as text, an empty field NULL, as DuckDB's all_varchar reader gives them) and COPied into the
temporary staging table. `--db` takes a DuckDB file or a postgresql:// URL (a migrated database).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from pipelines import settings
from pipelines.store.dialect import DUCKDB, column_types, dialect_of
from pipelines.store.store import Store
from pipelines.store.write import changed

ORG_TYPES = ("company", "community")


@dataclass
class LoadReport:
    organizations: int = 0
    members: int = 0
    members_removed: int = 0
    rejected: list[str] = field(default_factory=list)


def _reader(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "read_parquet(?)"
    if suffix in (".csv", ".tsv", ".txt"):
        return "read_csv(?, header = true, all_varchar = true)"
    raise ValueError(f"{path}: expected a .csv or .parquet file")


def _columns(conn: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    if dialect_of(conn) is not DUCKDB:
        return list(column_types(conn, table))
    rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                        "ORDER BY ordinal_position", [table]).fetchall()
    if not rows:
        raise RuntimeError(f"table {table} does not exist: open the database through the code location's schema")
    return [r[0] for r in rows]


def _arrow_file(path: str) -> pa.Table:
    """The file as an Arrow table: a CSV's columns all text (an empty field is NULL), a Parquet
    file's as they are."""
    import csv

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    _reader(path)   # the same refusal of other suffixes
    if Path(path).suffix.lower() in (".parquet", ".pq"):
        return pq.read_table(path)
    with open(path, newline="") as f:
        header = next(csv.reader(f), [])
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={c: pa.string() for c in header}, strings_can_be_null=True, quoted_strings_can_be_null=False))


def _stage(conn: duckdb.DuckDBPyConnection, name: str, path: str, required: tuple[str, ...]) -> list[str]:
    if dialect_of(conn) is DUCKDB:
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT row_number() OVER () + 1 AS _line, * "
                     f"FROM {_reader(path)}", [path])
    else:
        table = _arrow_file(path)
        table = table.add_column(0, "_line", pa.array(range(2, table.num_rows + 2), pa.int64()))
        conn.load_rows(table, name)   # DROP IF EXISTS + CREATE TEMPORARY TABLE + COPY
    # (on PostgreSQL the catalog would also list other sessions' temporary tables of this name)
    cols = [c for c in (_columns(conn, name) if dialect_of(conn) is DUCKDB else table.column_names) if c != "_line"]
    missing = [c for c in required if c not in cols]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(cols)})")
    return cols


def _as(conn: duckdb.DuckDBPyConnection, table: str, column: str) -> str:
    """The staged `column` as `table`'s column: as it is on DuckDB (its INSERT casts text to the
    column's type); cast on PostgreSQL, whose INSERT casts text to a timestamp only when asked."""
    if dialect_of(conn) is DUCKDB:
        return column
    return f"CAST({column} AS {column_types(conn, table)[column].lower()})"


def load(conn: duckdb.DuckDBPyConnection, organizations: str | None, members: str | None = None,
         *, replace_members: bool = False) -> LoadReport:
    """Runs inside the caller's transaction (`Store.transaction()`): all of it lands or none."""
    report = LoadReport()
    if organizations:
        cols = _stage(conn, "_orgs", organizations, ("id", "name", "type"))
        bad = conn.execute(
            "SELECT _line, CASE WHEN id IS NULL OR trim(id) = '' THEN 'missing id'"
            " WHEN name IS NULL OR trim(name) = '' THEN 'missing name'"
            f" ELSE 'type must be {' or '.join(ORG_TYPES)}, got ' || coalesce(type, 'nothing') END"
            f" FROM _orgs WHERE id IS NULL OR trim(id) = '' OR name IS NULL OR trim(name) = ''"
            f" OR lower(type) NOT IN {ORG_TYPES} OR type IS NULL ORDER BY _line").fetchall()
        report.rejected += [f"{organizations} line {line}: {why}" for line, why in bad]
        target = [c for c in _columns(conn, "organizations") if c in cols]
        select = ", ".join("lower(type)" if c == "type" else _as(conn, "organizations", c) for c in target)
        updates = ", ".join(f"{c} = excluded.{c}" for c in target if c != "id")
        report.organizations = changed(conn, conn.execute(
            f"INSERT INTO organizations ({', '.join(target)}) SELECT {select} FROM _orgs"
            f" WHERE id IS NOT NULL AND trim(id) <> '' AND name IS NOT NULL AND trim(name) <> ''"
            f" AND lower(type) IN {ORG_TYPES} ON CONFLICT (id) DO UPDATE SET {updates}"))
    if members:
        cols = _stage(conn, "_members", members, ("organization_id", "user_id"))
        bad = conn.execute(
            "SELECT _line, CASE WHEN organization_id IS NULL OR user_id IS NULL THEN 'missing organization_id or user_id'"
            " ELSE 'unknown organization ' || organization_id END FROM _members m"
            " WHERE organization_id IS NULL OR user_id IS NULL"
            " OR NOT EXISTS (SELECT 1 FROM organizations o WHERE o.id = m.organization_id) ORDER BY _line").fetchall()
        report.rejected += [f"{members} line {line}: {why}" for line, why in bad]
        good = ("organization_id IS NOT NULL AND user_id IS NOT NULL"
                " AND EXISTS (SELECT 1 FROM organizations o WHERE o.id = _members.organization_id)")
        if replace_members:
            report.members_removed = changed(conn, conn.execute(
                "DELETE FROM organization_members t WHERE t.organization_id IN"
                f" (SELECT DISTINCT organization_id FROM _members WHERE {good})"
                f" AND NOT EXISTS (SELECT 1 FROM _members WHERE {good}"
                " AND _members.organization_id = t.organization_id AND _members.user_id = t.user_id)"))
        target = [c for c in _columns(conn, "organization_members") if c in cols]
        updates = ", ".join(f"{c} = excluded.{c}" for c in target if c not in ("organization_id", "user_id"))
        conflict = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        select = ", ".join(_as(conn, "organization_members", c) for c in target)
        report.members = changed(conn, conn.execute(
            f"INSERT INTO organization_members ({', '.join(target)}) SELECT {select} FROM _members"
            f" WHERE {good} ON CONFLICT (organization_id, user_id) {conflict}"))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.billing.load_organizations", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("organizations", nargs="?", help="CSV or Parquet: id, name, type, [created, deleted_at, billing_email]")
    parser.add_argument("--members", help="CSV or Parquet: organization_id, user_id, [role, joined_at]")
    parser.add_argument("--replace-members", action="store_true",
                        help="the file is each listed organisation's full member list")
    parser.add_argument("--db", default=settings.value("DUCKDB_PATH"),
                        help="DuckDB file (default $DUCKDB_PATH), or a postgresql:// URL of a migrated database")
    args = parser.parse_args(argv)
    if not args.organizations and not args.members:
        parser.error("give an organizations file, --members, or both")
    if not args.db:
        parser.error("no database: pass --db or set DUCKDB_PATH")
    from pipelines.billing.assets import report_inputs
    from pipelines.common.ledgers import table_rows
    from pipelines.schema import database

    if args.db.startswith(("postgresql://", "postgres://")):
        from pipelines.store.postgres import PostgresDatabase
        db = PostgresDatabase(args.db, max_size=1)
    else:
        db = database(args.db)
    try:
        with Store(db.connect).transaction() as conn:
            report = load(conn, args.organizations, args.members, replace_members=args.replace_members)
            rows = table_rows(conn, [t for t, given in (("organizations", args.organizations),
                                                        ("organization_members", args.members)) if given])
    finally:
        if hasattr(db, "close"):
            db.close()
    print(f"organizations upserted: {report.organizations}, members upserted: {report.members}, "
          f"members removed: {report.members_removed}, rejected rows: {len(report.rejected)}")
    if report_inputs(rows, "load_organizations"):
        print(f"reported to Dagster (DAGSTER_HOME): {', '.join(rows)} updated")
    for line in report.rejected:
        print(f"  rejected: {line}", file=sys.stderr)
    return 1 if report.rejected else 0


if __name__ == "__main__":
    sys.exit(main())
