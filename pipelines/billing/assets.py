"""Asset group `billing`: the ledger and the tables the stripe-events consumer writes, with
lineage stripe_events -> each projection, and the platform's input tables.

They are written by ingest_stripe_events_job (a queue drain, not an asset materialisation), so
they are declared as asset specs and the drain reports a materialisation of each, with its row
count, after every run that applied something."""

from __future__ import annotations

import dagster as dg

BILLING = "billing"

LEDGER = "stripe_events"
PROJECTIONS = {
    "stripe_customers": "Stripe customers, with the organisation each bills and its billing email.",
    "stripe_subscriptions": "Subscriptions as Stripe has them (status a closed set), linked to their organisation.",
    "stripe_subscription_items": "Each subscription's items: price, product, quantity (seats), period.",
    "stripe_products": "Stripe products (name, active, metadata), one row per product.",
    "stripe_prices": "Stripe prices: product, currency, unit amount, recurring interval, active.",
    "stripe_invoices": "Stripe invoices: status, amounts due and paid, payment attempts, subscription and period.",
    "stripe_payment_methods": "Payment methods and the customer each is attached to.",
    "stripe_payments": "Money movements: one row per PaymentIntent, charge, refund and dispute.",
}
INPUTS = {
    "organizations": "Platform input: organisations (company or community), filled by the platform.",
    "organization_members": "Platform input: members of each organisation (seat counts).",
}

ledger_spec = dg.AssetSpec(LEDGER, group_name=BILLING, kinds={"duckdb"},
                           description="Every Stripe event received, keyed by event id, with its outcome "
                                       "(applied, stale, ignored-tenant, unknown-type, quarantined).")
projection_specs = [dg.AssetSpec(name, group_name=BILLING, kinds={"duckdb"}, deps=[LEDGER], description=text)
                    for name, text in PROJECTIONS.items()]
input_specs = [dg.AssetSpec(name, group_name=BILLING, kinds={"duckdb"}, description=text)
               for name, text in INPUTS.items()]
BILLING_ASSETS = [ledger_spec, *projection_specs, *input_specs]


def table_counts(conn) -> dict[str, int]:
    return {name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in [LEDGER, *PROJECTIONS]}


def report_tables(context) -> dict[str, int]:
    """The drain's after_run: a materialisation of the ledger and each projection, with row counts."""
    with context.resources.duckdb.connect() as conn:
        counts = table_counts(conn)
    for name, rows in counts.items():
        context.log_event(dg.AssetMaterialization(asset_key=name, metadata={"rows": dg.MetadataValue.int(rows)}))
    return {f"{name}_rows": rows for name, rows in counts.items()}
