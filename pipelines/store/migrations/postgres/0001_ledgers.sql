-- The system of record's first schema: every ledger and input table, with the keys, NOT NULLs,
-- defaults and CHECK vocabularies of the DuckDB tables (pipelines/*/tables.py).
-- tests/store/test_store_schema_agreement.py compares the two column by column.
--
-- One difference on purpose: email_events has a PRIMARY KEY (event_id). DuckDB keeps event_id
-- unique through its single writer; here several hosts write at once, so the key enforces it.
-- JSON columns are jsonb (parsed once, indexable); the reports (email_sends_daily, billing_daily, ...)
-- are not here: they stay DuckDB tables rebuilt by their assets.

CREATE TABLE quarantine (
    quarantine_id   text PRIMARY KEY,
    source          text NOT NULL,
    sqs_message_id  text,
    raw_body        text NOT NULL,
    reason          text NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at     timestamptz,
    replay_result   text
);

CREATE TABLE email_messages (
    request_id      text NOT NULL,
    to_address      text NOT NULL,
    kind            text NOT NULL,
    message_id      text,
    from_address    text,
    subject         text,
    status          text NOT NULL CHECK (status IN ('pending', 'skipped', 'failed', 'sent', 'delivered', 'bounced', 'soft-bounced', 'complained')),
    skip_reason     text,
    error           text,
    attempts        integer NOT NULL DEFAULT 0,
    user_id         text,
    remote_ip       text,
    transport       text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    status_at       timestamptz,
    request_digest  text,
    PRIMARY KEY (request_id, to_address)
);
CREATE INDEX email_messages_message_id ON email_messages (message_id);

CREATE TABLE email_events (
    event_id        text PRIMARY KEY,
    sns_message_id  text NOT NULL,
    message_id      text NOT NULL,
    recipient       text,
    event_type      text NOT NULL,
    bounce_type     text CHECK (bounce_type IS NULL OR bounce_type IN ('Permanent', 'Transient', 'Undetermined')),
    bounce_subtype  text,
    occurred_at     timestamptz,
    received_at     timestamptz NOT NULL DEFAULT now(),
    orphan          boolean NOT NULL DEFAULT false,
    status_before   text CHECK (status_before IS NULL OR status_before IN ('pending', 'skipped', 'failed', 'sent', 'delivered', 'bounced', 'soft-bounced', 'complained')),
    status_after    text CHECK (status_after IS NULL OR status_after IN ('pending', 'skipped', 'failed', 'sent', 'delivered', 'bounced', 'soft-bounced', 'complained')),
    detail          jsonb
);
CREATE INDEX email_events_message_id ON email_events (message_id);

CREATE TABLE email_addresses (
    address            text PRIMARY KEY,
    verified           boolean NOT NULL DEFAULT true,
    unverify_reason    text,
    transient_bounces  integer NOT NULL DEFAULT 0,
    last_event_at      timestamptz
);

CREATE TABLE address_status_changes (
    change_id     text PRIMARY KEY,
    address       text NOT NULL,
    verified      boolean NOT NULL,
    reason        text,
    changed_at    timestamptz NOT NULL,
    published_at  timestamptz
);

CREATE TABLE sns_control_messages (
    sns_message_id    text PRIMARY KEY,
    sns_type          text NOT NULL,
    topic_arn         text NOT NULL,
    action            text NOT NULL,
    subscription_arn  text,
    received_at       timestamptz NOT NULL
);

CREATE TABLE stripe_events (
    event_id        text PRIMARY KEY,
    type            text NOT NULL,
    created         timestamptz NOT NULL,
    api_version     text,
    livemode        boolean NOT NULL,
    object_type     text,
    object_id       text,
    received_at     timestamptz NOT NULL,
    processed_at    timestamptz NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('applied', 'stale', 'ignored-tenant', 'unknown-type', 'quarantined')),
    error           text,
    re_retrieved    boolean NOT NULL DEFAULT false,
    delivery        text,
    sqs_message_id  text
);

CREATE TABLE stripe_object_watermarks (
    object_id      text PRIMARY KEY,
    object_type    text NOT NULL,
    event_created  timestamptz NOT NULL,
    event_id       text NOT NULL,
    retrieved_at   timestamptz,
    updated_at     timestamptz NOT NULL
);

CREATE TABLE stripe_customers (
    customer_id             text PRIMARY KEY,
    organization_id         text,
    billing_email           text,
    name                    text,
    description             text,
    currency                text,
    default_payment_method  text,
    deleted                 boolean NOT NULL DEFAULT false,
    deleted_at              timestamptz,
    livemode                boolean,
    created                 timestamptz,
    metadata                jsonb,
    raw                     jsonb,
    updated_at              timestamptz NOT NULL
);

CREATE TABLE stripe_subscriptions (
    subscription_id         text PRIMARY KEY,
    customer_id             text,
    organization_id         text,
    status                  text NOT NULL CHECK (status IN ('incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'canceled', 'unpaid', 'paused')),
    quantity                bigint,
    cancel_at_period_end    boolean,
    cancel_at               timestamptz,
    canceled_at             timestamptz,
    ended_at                timestamptz,
    current_period_start    timestamptz,
    current_period_end      timestamptz,
    trial_start             timestamptz,
    trial_end               timestamptz,
    start_date              timestamptz,
    pause_behavior          text,
    latest_invoice          text,
    default_payment_method  text,
    collection_method       text,
    currency                text,
    livemode                boolean,
    created                 timestamptz,
    metadata                jsonb,
    raw                     jsonb,
    updated_at              timestamptz NOT NULL
);

CREATE TABLE stripe_subscription_items (
    item_id               text PRIMARY KEY,
    subscription_id       text NOT NULL,
    price_id              text,
    product_id            text,
    quantity              bigint,
    current_period_start  timestamptz,
    current_period_end    timestamptz,
    created               timestamptz,
    updated_at            timestamptz NOT NULL
);

CREATE TABLE stripe_products (
    product_id   text PRIMARY KEY,
    name         text,
    description  text,
    active       boolean,
    deleted      boolean NOT NULL DEFAULT false,
    livemode     boolean,
    created      timestamptz,
    metadata     jsonb,
    raw          jsonb,
    updated_at   timestamptz NOT NULL
);

CREATE TABLE stripe_prices (
    price_id                  text PRIMARY KEY,
    product_id                text,
    active                    boolean,
    currency                  text,
    unit_amount               bigint,
    type                      text,
    recurring_interval        text,
    recurring_interval_count  bigint,
    lookup_key                text,
    nickname                  text,
    deleted                   boolean NOT NULL DEFAULT false,
    livemode                  boolean,
    created                   timestamptz,
    metadata                  jsonb,
    raw                       jsonb,
    updated_at                timestamptz NOT NULL
);

CREATE TABLE stripe_invoices (
    invoice_id            text PRIMARY KEY,
    customer_id           text,
    subscription_id       text,
    status                text,
    billing_reason        text,
    collection_method     text,
    currency              text,
    amount_due            bigint,
    amount_paid           bigint,
    amount_remaining      bigint,
    total                 bigint,
    attempt_count         bigint,
    next_payment_attempt  timestamptz,
    period_start          timestamptz,
    period_end            timestamptz,
    due_date              timestamptz,
    paid_at               timestamptz,
    number                text,
    hosted_invoice_url    text,
    livemode              boolean,
    created               timestamptz,
    raw                   jsonb,
    updated_at            timestamptz NOT NULL
);

CREATE TABLE stripe_payment_methods (
    payment_method_id  text PRIMARY KEY,
    customer_id        text,
    type               text,
    card_brand         text,
    card_last4         text,
    card_exp_month     bigint,
    card_exp_year      bigint,
    setup_intent_id    text,
    livemode           boolean,
    created            timestamptz,
    raw                jsonb,
    updated_at         timestamptz NOT NULL
);

CREATE TABLE stripe_payments (
    payment_id         text PRIMARY KEY,
    kind               text NOT NULL CHECK (kind IN ('payment_intent', 'charge', 'refund', 'dispute')),
    amount             bigint,
    currency           text,
    status             text,
    failure_code       text,
    failure_message    text,
    reason             text,
    amount_refunded    bigint,
    invoice_id         text,
    customer_id        text,
    payment_intent_id  text,
    charge_id          text,
    livemode           boolean,
    created            timestamptz,
    raw                jsonb,
    updated_at         timestamptz NOT NULL
);

CREATE TABLE stripe_credit_notes (
    credit_note_id  text PRIMARY KEY,
    customer_id     text,
    invoice_id      text,
    number          text,
    status          text,
    type            text,
    amount          bigint,
    currency        text,
    reason          text,
    memo            text,
    effective_at    timestamptz,
    voided_at       timestamptz,
    livemode        boolean,
    created         timestamptz,
    metadata        jsonb,
    raw             jsonb,
    updated_at      timestamptz NOT NULL
);

CREATE TABLE organizations (
    id             text PRIMARY KEY,
    name           text NOT NULL,
    type           text NOT NULL CHECK (type IN ('company', 'community')),
    created        timestamptz NOT NULL,
    deleted_at     timestamptz,
    billing_email  text
);

CREATE TABLE organization_members (
    organization_id  text NOT NULL,
    user_id          text NOT NULL,
    role             text,
    joined_at        timestamptz,
    PRIMARY KEY (organization_id, user_id)
);

CREATE TABLE billing_drift (
    run_id        text NOT NULL,
    object_type   text NOT NULL,
    object_id     text NOT NULL,
    field         text NOT NULL,
    table_value   text,
    stripe_value  text,
    action        text NOT NULL CHECK (action IN ('inserted', 'updated', 'deleted', 'unrepaired')),
    reason        text,
    detected_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_drift_run ON billing_drift (run_id);

CREATE TABLE billing_reconcile_runs (
    run_id            text PRIMARY KEY,
    mode              text NOT NULL CHECK (mode IN ('full', 'incremental', 'resync')),
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    cursor_created    bigint,
    cursor_event_ids  text[],
    api_calls         integer,
    objects_checked   integer,
    differences       integer,
    unrepaired        integer
);

CREATE TABLE billing_notices (
    request_id       text PRIMARY KEY,
    kind             text NOT NULL,
    event_id         text,
    organization_id  text,
    dispatched_at    timestamptz NOT NULL DEFAULT now()
);
