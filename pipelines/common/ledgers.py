"""Ledgers as assets: the tables the queue drains write, in the asset graph.

A drain is a job (a queue consumer), not an asset materialization, so each domain declares the
tables its drain writes as asset specs (`ledger_spec`) and hands their keys to the kit's factory
(`queue_consumer_defs(ledgers=...)`). After every run that took messages the factory reports a
materialization of each, with the table's row count and the run's counters; rollup assets name
the ledgers in `deps`, so lineage runs from each queue's tables to every rollup, and automation
conditions that wait on "a dependency updated" fire when a drain lands new rows.

`quarantine` is written by every consumer through the kit: declared here once, reported by every drain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import dagster as dg


QUARANTINE = "quarantine"
# Run counters copied onto each ledger materialization (when the run has them).
RUN_FIGURES = ("received", "messages", "quarantined", "deleted", "applied", "events_new", "sent", "failed")


def ledger_spec(name: str, *, group: str, description: str, deps: Iterable[str] = ()) -> dg.AssetSpec:
    return dg.AssetSpec(name, group_name=group, kinds={"duckdb"}, deps=list(deps),
                        description=f"DuckDB table {name} (a ledger, written by queue drain runs): {description}",
                        metadata={"table": name})


quarantine_spec = ledger_spec(
    QUARANTINE, group="queues",
    description="every message a consumer could not accept (raw body, redacted, and the reason), from all "
                "queues; `replay_*_quarantine_job` runs them again after a fix. If it grows: "
                "docs/operations.md, \"Quarantine grows\".")


def table_rows(conn, tables: Iterable[str]) -> dict[str, int]:
    return {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}


def report_ledgers(context, keys: Iterable[str], counters: Mapping[str, int]) -> None:
    """Log a materialization of each ledger: its row count and this run's figures."""
    keys = list(keys)
    with context.resources.store.ledgers().read() as conn:
        rows = table_rows(conn, keys)
    run = {f"run_{k}": dg.MetadataValue.int(int(counters[k])) for k in RUN_FIGURES if counters.get(k)}
    for key in keys:
        context.log_event(dg.AssetMaterialization(
            asset_key=key, description=f"written by run {context.run_id[:8]}",
            metadata={"rows": dg.MetadataValue.int(rows[key]), **run}))
