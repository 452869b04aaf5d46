"""The ses-notifications doorbell (DESIGN rule 1)."""

from pipelines.common.doorbell import queue_doorbell_sensor
from pipelines.email_delivery.jobs import ingest_ses_notifications_job

ses_notifications_sensor = queue_doorbell_sensor(
    name="ses_notifications_sensor",
    job=ingest_ses_notifications_job,
    queue_resource_key="ses_notifications_queue",
)
