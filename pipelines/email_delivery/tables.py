"""Delivery tracking's tables: SES events, address health, SNS control messages, reports."""

from pipelines.email.ledger import MessageStatus
from pipelines.email_delivery.vocab import BounceType
from pipelines.store.vocab import check

TABLES: list[str] = [
    # SES notifications, one row per SNS message and recipient.
    f"""
    CREATE TABLE IF NOT EXISTS email_events (
        event_id        VARCHAR NOT NULL,      -- unique: SNS MessageId, plus ':<recipient>' when fanned out
        sns_message_id  VARCHAR NOT NULL,
        message_id      VARCHAR NOT NULL,      -- SES mail.messageId
        recipient       VARCHAR,
        event_type      VARCHAR NOT NULL,      -- Send, Delivery, Bounce, Complaint, Reject, DeliveryDelay, Open, Click, RenderingFailure, Subscription
        bounce_type     VARCHAR {check("bounce_type", BounceType, nullable=True)},
        bounce_subtype  VARCHAR,
        occurred_at     TIMESTAMPTZ,
        received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
        orphan          BOOLEAN NOT NULL DEFAULT false,  -- no email_messages row had this message_id
        status_before   VARCHAR {check("status_before", MessageStatus, nullable=True)},
        status_after    VARCHAR {check("status_after", MessageStatus, nullable=True)},
        detail          JSON                   -- the SES bounce/complaint/delivery/... object
    )
    """,
    # No index on email_events at all. event_id is unique because the ingest writes only event_ids it
    # has checked are absent, in the same transaction, and DuckDB lets one process write the file at
    # a time (email_delivery/ingest.py). A primary key would add ~40% to each insert on the ingest path and its
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
    # View: every message's current status, with its latest SES event.
    """
    CREATE OR REPLACE VIEW email_status AS
    SELECT m.request_id, m.to_address, m.kind, m.message_id, m.status, m.status_at, m.sent_at,
           e.events, e.last_event_type, e.last_event_at
    FROM email_messages m
    LEFT JOIN (
        SELECT message_id, count(*) AS events, arg_max(event_type, occurred_at) AS last_event_type,
               max(occurred_at) AS last_event_at
        FROM email_events WHERE NOT orphan GROUP BY message_id
    ) e USING (message_id)
    """,
]
