"""DuckDB tables of the billing domain. The README's "Tables" section documents them.

Stripe owns every stripe_* row: they are projections of Stripe objects, written by the
stripe-events consumer (ingest.py) and repaired by reconciliation. Times are TIMESTAMPTZ (UTC),
amounts are integers in the currency's minor unit, as Stripe sends them. `raw` keeps the object
as last applied, at the pinned API version.

`organizations` and `organization_members` are input tables that the platform fills; billing
reads them (seat counts, billing contacts, leaks).
"""

from __future__ import annotations

from pipelines.billing.vocab import (DriftAction, EventOutcome, OrganizationType, PaymentKind, ReconcileMode,
                                     SubscriptionStatus)
from pipelines.store.vocab import check

INGESTION_TABLES: list[str] = [
    # The ledger: one row per Stripe event id ever received; a redelivery changes nothing.
    f"""
    CREATE TABLE IF NOT EXISTS stripe_events (
        event_id        VARCHAR PRIMARY KEY,   -- evt_...
        type            VARCHAR NOT NULL,
        created         TIMESTAMPTZ NOT NULL,  -- Stripe's event time
        api_version     VARCHAR,
        livemode        BOOLEAN NOT NULL,
        object_type     VARCHAR,               -- data.object.object: customer, subscription, ...
        object_id       VARCHAR,
        received_at     TIMESTAMPTZ NOT NULL,  -- when the message reached us
        processed_at    TIMESTAMPTZ NOT NULL,
        outcome         VARCHAR NOT NULL {check('outcome', EventOutcome)},
        error           VARCHAR,               -- why it was quarantined or what was notable
        re_retrieved    BOOLEAN NOT NULL DEFAULT false,  -- the object was fetched again from Stripe
        delivery        VARCHAR,               -- eventbridge or webhook
        sqs_message_id  VARCHAR
    )
    """,
    # Per object: the newest event applied (created, then id). Older payloads never overwrite.
    """
    CREATE TABLE IF NOT EXISTS stripe_object_watermarks (
        object_id      VARCHAR PRIMARY KEY,
        object_type    VARCHAR NOT NULL,
        event_created  TIMESTAMPTZ NOT NULL,
        event_id       VARCHAR NOT NULL,
        retrieved_at   TIMESTAMPTZ,            -- last re-retrieve from the API
        updated_at     TIMESTAMPTZ NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS stripe_customers (
        customer_id             VARCHAR PRIMARY KEY,
        organization_id         VARCHAR,       -- the organisation billed: customer metadata or Checkout
        billing_email           VARCHAR,
        name                    VARCHAR,
        description             VARCHAR,
        currency                VARCHAR,
        default_payment_method  VARCHAR,       -- invoice_settings.default_payment_method
        deleted                 BOOLEAN NOT NULL DEFAULT false,
        deleted_at              TIMESTAMPTZ,   -- time of the customer.deleted event
        livemode                BOOLEAN,
        created                 TIMESTAMPTZ,
        metadata                JSON,
        raw                     JSON,
        updated_at              TIMESTAMPTZ NOT NULL
    )
    """,
    f"""
    CREATE TABLE IF NOT EXISTS stripe_subscriptions (
        subscription_id         VARCHAR PRIMARY KEY,
        customer_id             VARCHAR,
        organization_id         VARCHAR,       -- subscription metadata, Checkout, else its customer's
        status                  VARCHAR NOT NULL {check('status', SubscriptionStatus)},
        quantity                BIGINT,        -- sum of the items' quantities (seats)
        cancel_at_period_end    BOOLEAN,
        cancel_at               TIMESTAMPTZ,
        canceled_at             TIMESTAMPTZ,
        ended_at                TIMESTAMPTZ,
        current_period_start    TIMESTAMPTZ,   -- earliest of the items' (per item since 2025-03-31)
        current_period_end      TIMESTAMPTZ,   -- earliest of the items': the next renewal
        trial_start             TIMESTAMPTZ,
        trial_end               TIMESTAMPTZ,
        start_date              TIMESTAMPTZ,
        pause_behavior          VARCHAR,       -- pause_collection.behavior, NULL when not paused
        latest_invoice          VARCHAR,
        default_payment_method  VARCHAR,
        collection_method       VARCHAR,
        currency                VARCHAR,
        livemode                BOOLEAN,
        created                 TIMESTAMPTZ,
        metadata                JSON,
        raw                     JSON,
        updated_at              TIMESTAMPTZ NOT NULL
    )
    """,
    # The items of each subscription as last applied (items removed from it are deleted).
    """
    CREATE TABLE IF NOT EXISTS stripe_subscription_items (
        item_id               VARCHAR PRIMARY KEY,
        subscription_id       VARCHAR NOT NULL,
        price_id              VARCHAR,
        product_id            VARCHAR,
        quantity              BIGINT,
        current_period_start  TIMESTAMPTZ,
        current_period_end    TIMESTAMPTZ,
        created               TIMESTAMPTZ,
        updated_at            TIMESTAMPTZ NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS stripe_products (
        product_id   VARCHAR PRIMARY KEY,
        name         VARCHAR,
        description  VARCHAR,
        active       BOOLEAN,
        deleted      BOOLEAN NOT NULL DEFAULT false,
        livemode     BOOLEAN,
        created      TIMESTAMPTZ,
        metadata     JSON,
        raw          JSON,
        updated_at   TIMESTAMPTZ NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS stripe_prices (
        price_id                  VARCHAR PRIMARY KEY,
        product_id                VARCHAR,
        active                    BOOLEAN,
        currency                  VARCHAR,
        unit_amount               BIGINT,
        type                      VARCHAR,     -- one_time or recurring
        recurring_interval        VARCHAR,
        recurring_interval_count  BIGINT,
        lookup_key                VARCHAR,
        nickname                  VARCHAR,
        deleted                   BOOLEAN NOT NULL DEFAULT false,
        livemode                  BOOLEAN,
        created                   TIMESTAMPTZ,
        metadata                  JSON,
        raw                       JSON,
        updated_at                TIMESTAMPTZ NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS stripe_invoices (
        invoice_id            VARCHAR PRIMARY KEY,
        customer_id           VARCHAR,
        subscription_id       VARCHAR,         -- parent.subscription_details.subscription (older: subscription)
        status                VARCHAR,         -- draft, open, paid, uncollectible, void
        billing_reason        VARCHAR,
        collection_method     VARCHAR,
        currency              VARCHAR,
        amount_due            BIGINT,
        amount_paid           BIGINT,
        amount_remaining      BIGINT,
        total                 BIGINT,
        attempt_count         BIGINT,
        next_payment_attempt  TIMESTAMPTZ,
        period_start          TIMESTAMPTZ,
        period_end            TIMESTAMPTZ,
        due_date              TIMESTAMPTZ,
        paid_at               TIMESTAMPTZ,     -- status_transitions.paid_at
        number                VARCHAR,
        hosted_invoice_url    VARCHAR,
        livemode              BOOLEAN,
        created               TIMESTAMPTZ,
        raw                   JSON,
        updated_at            TIMESTAMPTZ NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS stripe_payment_methods (
        payment_method_id  VARCHAR PRIMARY KEY,
        customer_id        VARCHAR,            -- NULL once detached
        type               VARCHAR,
        card_brand         VARCHAR,
        card_last4         VARCHAR,
        card_exp_month     BIGINT,
        card_exp_year      BIGINT,
        setup_intent_id    VARCHAR,            -- the SetupIntent that saved it, when seen
        livemode           BOOLEAN,
        created            TIMESTAMPTZ,
        raw                JSON,
        updated_at         TIMESTAMPTZ NOT NULL
    )
    """,
    # Money movements: one row per PaymentIntent, charge, refund and dispute.
    f"""
    CREATE TABLE IF NOT EXISTS stripe_payments (
        payment_id         VARCHAR PRIMARY KEY,  -- pi_..., ch_/py_..., re_..., dp_/du_...
        kind               VARCHAR NOT NULL {check('kind', PaymentKind)},
        amount             BIGINT,
        currency           VARCHAR,
        status             VARCHAR,
        failure_code       VARCHAR,            -- failure_code / last_payment_error.code / decline
        failure_message    VARCHAR,
        reason             VARCHAR,            -- refund or dispute reason
        amount_refunded    BIGINT,             -- charges
        invoice_id         VARCHAR,
        customer_id        VARCHAR,
        payment_intent_id  VARCHAR,
        charge_id          VARCHAR,
        livemode           BOOLEAN,
        created            TIMESTAMPTZ,
        raw                JSON,
        updated_at         TIMESTAMPTZ NOT NULL
    )
    """,
    # Credit notes: adjustments of a finalized invoice (a credit, a refund, or both).
    """
    CREATE TABLE IF NOT EXISTS stripe_credit_notes (
        credit_note_id  VARCHAR PRIMARY KEY,
        customer_id     VARCHAR,
        invoice_id      VARCHAR,
        number          VARCHAR,
        status          VARCHAR,               -- issued or void
        type            VARCHAR,               -- pre_payment, post_payment or mixed
        amount          BIGINT,                -- total credited, tax included
        currency        VARCHAR,
        reason          VARCHAR,               -- duplicate, fraudulent, order_change, product_unsatisfactory
        memo            VARCHAR,
        effective_at    TIMESTAMPTZ,
        voided_at       TIMESTAMPTZ,
        livemode        BOOLEAN,
        created         TIMESTAMPTZ,
        metadata        JSON,
        raw             JSON,
        updated_at      TIMESTAMPTZ NOT NULL
    )
    """,
    # Platform input: the organisations billing serves, and their members (seats).
    f"""
    CREATE TABLE IF NOT EXISTS organizations (
        id             VARCHAR PRIMARY KEY,
        name           VARCHAR NOT NULL,
        type           VARCHAR NOT NULL {check('type', OrganizationType)},
        created        TIMESTAMPTZ NOT NULL,
        deleted_at     TIMESTAMPTZ,
        billing_email  VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS organization_members (
        organization_id  VARCHAR NOT NULL,
        user_id          VARCHAR NOT NULL,
        role             VARCHAR,
        joined_at        TIMESTAMPTZ,
        PRIMARY KEY (organization_id, user_id)
    )
    """,
]


# ---- the billing operations' tables: reconciliation, notices ------------------------------

OPERATIONS_TABLES: list[str] = [
    # Every difference reconciliation found between Stripe and the tables, and what it did.
    f"""
    CREATE TABLE IF NOT EXISTS billing_drift (
        run_id       VARCHAR NOT NULL,
        object_type  VARCHAR NOT NULL,          -- customer, subscription, invoice, payment_intent, credit_note
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
    # The reports (reporting.py): declared here so they exist, empty, before their assets first run;
    # each materialisation replaces their rows in one transaction.
    """
    CREATE TABLE IF NOT EXISTS subscriptions_current (
        organization_id      VARCHAR,          -- one row per organisation not deleted
        organization_name    VARCHAR,
        organization_type    VARCHAR,
        subscription_id      VARCHAR,
        customer_id          VARCHAR,
        status               VARCHAR,
        seats                BIGINT,
        current_period_end   TIMESTAMPTZ,
        cancel_at_period_end BOOLEAN,
        good_standing        BOOLEAN,
        standing_reason      VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS billing_daily (
        day                        DATE,       -- one row per day
        new_subscriptions          BIGINT,
        reactivated_subscriptions  BIGINT,
        churned_subscriptions      BIGINT,
        payments_succeeded         BIGINT,
        payments_failed            BIGINT,
        refunds                    BIGINT,
        refunded_amount            BIGINT,
        disputes                   BIGINT
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS billing_leaks (
        leak               VARCHAR,
        organization_id    VARCHAR,
        organization_name  VARCHAR,
        subscription_id    VARCHAR,
        status             VARCHAR,
        detected_at        TIMESTAMPTZ
    )
    """,
]


TABLES: list[str] = [*INGESTION_TABLES, *OPERATIONS_TABLES]
