-- The view email_status (pipelines/email_delivery/tables.py): every message's current status with
-- its latest SES event. DuckDB's arg_max(event_type, occurred_at) is spelled as
-- pipelines.store.dialect.POSTGRES.arg_max spells it (events without occurred_at are ignored).
-- tests/store/test_store_schema_agreement.py compares the view's columns with DuckDB's.

CREATE VIEW email_status AS
SELECT m.request_id, m.to_address, m.kind, m.message_id, m.status, m.status_at, m.sent_at,
       e.events, e.last_event_type, e.last_event_at
FROM email_messages m
LEFT JOIN (
    SELECT message_id, count(*) AS events,
           (array_agg(event_type ORDER BY occurred_at DESC) FILTER (WHERE occurred_at IS NOT NULL))[1] AS last_event_type,
           max(occurred_at) AS last_event_at
    FROM email_events WHERE NOT orphan GROUP BY message_id
) e USING (message_id);
