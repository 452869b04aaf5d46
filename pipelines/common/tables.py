"""Tables every queue consumer shares."""

TABLES: list[str] = [
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
