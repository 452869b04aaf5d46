"""DuckDB tables, created idempotently on first connection.

One list per domain; each statement must be safe to run again (IF NOT EXISTS).
The README's "Tables" section documents every column here.
"""

from __future__ import annotations

import duckdb

from resources.duckdb import DuckDBResource

COMMON = [
    # Anything that could not be parsed, verified or processed: kept with its raw body.
    """
    CREATE TABLE IF NOT EXISTS quarantine (
        quarantine_id   VARCHAR PRIMARY KEY,   -- '<source>:<SQS MessageId>'
        source          VARCHAR NOT NULL,      -- queue name: email-requests, ses-notifications, ...
        sqs_message_id  VARCHAR,
        raw_body        VARCHAR NOT NULL,
        reason          VARCHAR NOT NULL,
        quarantined_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
        replayed_at     TIMESTAMPTZ,
        replay_result   VARCHAR                -- NULL until replayed; 'ok' or the new reason
    )
    """,
]

EMAIL = [
    # The outbox and delivery ledger: one row per request and recipient.
    """
    CREATE TABLE IF NOT EXISTS email_messages (
        request_id    VARCHAR NOT NULL,
        to_address    VARCHAR NOT NULL,
        kind          VARCHAR NOT NULL,
        message_id    VARCHAR,                 -- the provider's (SES MessageId / Message-ID header)
        from_address  VARCHAR,
        subject       VARCHAR,
        status        VARCHAR NOT NULL,        -- pending, sent, skipped, failed, delivered, bounced, soft-bounced, complained
        skip_reason   VARCHAR,
        error         VARCHAR,
        attempts      INTEGER NOT NULL DEFAULT 0,
        user_id       VARCHAR,
        remote_ip     VARCHAR,                 -- kept only when the recipient is the acting user
        transport     VARCHAR,
        created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
        sent_at       TIMESTAMPTZ,
        status_at     TIMESTAMPTZ,             -- last status change
        PRIMARY KEY (request_id, to_address)
    )
    """,
    "CREATE INDEX IF NOT EXISTS email_messages_message_id ON email_messages (message_id)",
    # SES notifications, one row per SNS message and recipient.
    """
    CREATE TABLE IF NOT EXISTS email_events (
        event_id        VARCHAR NOT NULL,      -- unique: SNS MessageId, plus ':<recipient>' when fanned out
        sns_message_id  VARCHAR NOT NULL,
        message_id      VARCHAR NOT NULL,      -- SES mail.messageId
        recipient       VARCHAR,
        event_type      VARCHAR NOT NULL,      -- Send, Delivery, Bounce, Complaint, Reject, DeliveryDelay, Open, Click, RenderingFailure, Subscription
        bounce_type     VARCHAR,
        bounce_subtype  VARCHAR,
        occurred_at     TIMESTAMPTZ,
        received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
        orphan          BOOLEAN NOT NULL DEFAULT false,  -- no email_messages row had this message_id
        status_before   VARCHAR,
        status_after    VARCHAR,
        detail          JSON                   -- the SES bounce/complaint/delivery/... object
    )
    """,
    # No index on email_events at all. event_id is unique because the ingest writes only event_ids it
    # has checked are absent, in the same transaction, and DuckDB lets one process write the file at
    # a time (ses/ingest.py). A primary key would add ~40% to each insert on the ingest path and its
    # ART index must fit in memory, which a 90-day ledger would outgrow; readers join set-wise.
    # Address health, one row per address.
    """
    CREATE TABLE IF NOT EXISTS email_addresses (
        address            VARCHAR PRIMARY KEY,
        verified           BOOLEAN NOT NULL DEFAULT true,
        unverify_reason    VARCHAR,            -- hard-bounce, spam-complaint, soft-bounce
        transient_bounces  INTEGER NOT NULL DEFAULT 0,
        last_event_at      TIMESTAMPTZ
    )
    """,
    # Every change of verification, for the application to consume.
    """
    CREATE TABLE IF NOT EXISTS address_status_changes (
        change_id     VARCHAR PRIMARY KEY,     -- the event_id that caused it
        address       VARCHAR NOT NULL,
        verified      BOOLEAN NOT NULL,
        reason        VARCHAR,
        changed_at    TIMESTAMPTZ NOT NULL,
        published_at  TIMESTAMPTZ              -- set once sent to the outbound queue, if configured
    )
    """,
    # Verified SNS control messages: subscription confirmations (confirmed through the SNS API)
    # and unsubscribe confirmations (recorded). Refused ones are in quarantine.
    """
    CREATE TABLE IF NOT EXISTS sns_control_messages (
        sns_message_id    VARCHAR PRIMARY KEY,
        sns_type          VARCHAR NOT NULL,    -- SubscriptionConfirmation, UnsubscribeConfirmation
        topic_arn         VARCHAR NOT NULL,
        action            VARCHAR NOT NULL,    -- confirmed, recorded
        subscription_arn  VARCHAR,
        received_at       TIMESTAMPTZ NOT NULL
    )
    """,
    # Asset email_delivery_daily: per day (UTC, by send time) and kind; rebuilt on materialisation.
    """
    CREATE TABLE IF NOT EXISTS email_delivery_daily (
        day               DATE NOT NULL,
        kind              VARCHAR NOT NULL,
        sent              BIGINT NOT NULL,
        delivered         BIGINT NOT NULL,
        hard_bounced      BIGINT NOT NULL,
        soft_bounced      BIGINT NOT NULL,
        complained        BIGINT NOT NULL,
        delivery_rate     DOUBLE NOT NULL,
        bounce_rate       DOUBLE NOT NULL,     -- hard bounces / sent
        soft_bounce_rate  DOUBLE NOT NULL,
        complaint_rate    DOUBLE NOT NULL,
        PRIMARY KEY (day, kind)
    )
    """,
    # Asset ses_reputation: one row per materialisation, trailing-window rates.
    """
    CREATE TABLE IF NOT EXISTS ses_reputation (
        computed_at     TIMESTAMPTZ PRIMARY KEY,
        window_days     INTEGER NOT NULL,
        sent            BIGINT NOT NULL,
        hard_bounces    BIGINT NOT NULL,
        complaints      BIGINT NOT NULL,
        bounce_rate     DOUBLE NOT NULL,
        complaint_rate  DOUBLE NOT NULL
    )
    """,
]

ALL_DDL: list[str] = COMMON + EMAIL


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    for ddl in ALL_DDL:
        conn.execute(ddl)


def database(path: str, **settings) -> DuckDBResource:
    """A DuckDB resource for `path` that creates this schema on its first write connection."""
    return DuckDBResource(path=path, ddl=ALL_DDL, **settings)
