"""Dispatch's tables: the outbox ledger and the daily sends table."""

from pipelines.email.skip_rules import REASONS
from pipelines.email.ledger import EMAIL_MESSAGES, MessageStatus
from pipelines.store.vocab import check


def skipped_column(reason: str) -> str:
    return "skipped_" + reason.replace("-", "_")


TABLES: list[str] = [
    # The outbox and delivery ledger: one row per request and recipient.
    f"""
    CREATE TABLE IF NOT EXISTS {EMAIL_MESSAGES} (
        request_id    VARCHAR NOT NULL,
        to_address    VARCHAR NOT NULL,
        kind          VARCHAR NOT NULL,
        message_id    VARCHAR,                 -- the provider's (SES MessageId / Message-ID header)
        from_address  VARCHAR,
        subject       VARCHAR,
        status        VARCHAR NOT NULL {check("status", MessageStatus)},
        skip_reason   VARCHAR,
        error         VARCHAR,
        attempts      INTEGER NOT NULL DEFAULT 0,
        user_id       VARCHAR,
        remote_ip     VARCHAR,                 -- kept only when the recipient is the acting user
        transport     VARCHAR,
        created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
        sent_at       TIMESTAMPTZ,
        status_at     TIMESTAMPTZ,             -- last status change
        request_digest VARCHAR,                -- sha256 of the request's kind, recipients and context
        PRIMARY KEY (request_id, to_address)
    )
    """,
    # Ledgers created before request_digest existed.
    "ALTER TABLE email_messages ADD COLUMN IF NOT EXISTS request_digest VARCHAR",
    "CREATE INDEX IF NOT EXISTS email_messages_message_id ON email_messages (message_id)",
    # Asset email_sends_daily: per UTC day (of created_at) and kind; rebuilt on materialisation.
    f"""
    CREATE TABLE IF NOT EXISTS email_sends_daily (
        day      DATE NOT NULL,
        kind     VARCHAR NOT NULL,
        sent     BIGINT NOT NULL,              -- accepted by the provider (any status from sent on)
        skipped  BIGINT NOT NULL,
        {" ".join(f"{skipped_column(r)} BIGINT NOT NULL," for r in REASONS)}
        failed   BIGINT NOT NULL,
        pending  BIGINT NOT NULL,
        PRIMARY KEY (day, kind)
    )
    """,
]
