"""DuckDB tables of the billing operations (reconciliation, notices). The ingestion tables
(stripe_*, organizations, organization_members) are declared in tables.py."""

from __future__ import annotations

from enum import StrEnum

import duckdb

from pipelines.store.vocab import check


class DriftAction(StrEnum):
    INSERTED = "inserted"        # Stripe has it, the tables did not: row written
    UPDATED = "updated"          # a column differed: row rewritten from Stripe
    DELETED = "deleted"          # the tables had it, Stripe does not: row removed (customers: flagged)
    UNREPAIRED = "unrepaired"    # could not be repaired (the reason says why); the drift check fails


class ReconcileMode(StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"
    RESYNC = "resync"            # an operator's resync_customer, or the re-read after an operator action

TABLES: list[str] = [
    # Every difference reconciliation found between Stripe and the tables, and what it did.
    f"""
    CREATE TABLE IF NOT EXISTS billing_drift (
        run_id       VARCHAR NOT NULL,
        object_type  VARCHAR NOT NULL,          -- customer, subscription, invoice, payment_intent
        object_id    VARCHAR NOT NULL,
        field        VARCHAR NOT NULL,          -- a column, or '*' for a whole row missing / extra
        table_value  VARCHAR,
        stripe_value VARCHAR,
        action       VARCHAR NOT NULL {check("action", DriftAction)},
        reason       VARCHAR,                   -- why a difference was left unrepaired
        detected_at  TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX IF NOT EXISTS billing_drift_run ON billing_drift (run_id)",
    # One row per reconciliation run: its mode, the Events API cursor it ends at, its call counts.
    f"""
    CREATE TABLE IF NOT EXISTS billing_reconcile_runs (
        run_id            VARCHAR PRIMARY KEY,
        mode              VARCHAR NOT NULL {check("mode", ReconcileMode)},
        started_at        TIMESTAMPTZ NOT NULL,
        finished_at       TIMESTAMPTZ,
        cursor_created    BIGINT,                -- newest Stripe event `created` covered by this run
        cursor_event_ids  VARCHAR[],             -- events at exactly cursor_created already handled
        api_calls         INTEGER,
        objects_checked   INTEGER,
        differences       INTEGER,
        unrepaired        INTEGER
    )
    """,
    # Notices dispatched from Stripe events and schedules: one row per request id, so a
    # redelivered event or a re-run never dispatches again.
    """
    CREATE TABLE IF NOT EXISTS billing_notices (
        request_id     VARCHAR PRIMARY KEY,
        kind           VARCHAR NOT NULL,
        event_id       VARCHAR,
        organization_id VARCHAR,
        dispatched_at  TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
]


def ensure_ops_tables(conn: duckdb.DuckDBPyConnection) -> None:
    for statement in TABLES:
        conn.execute(statement)
