"""email_requests_sensor: a doorbell on the email-requests queue (DESIGN rule 1)."""

from pipelines.common.doorbell import queue_doorbell_sensor
from pipelines.email.jobs import send_email_batch_job

email_requests_sensor = queue_doorbell_sensor(
    name="email_requests_sensor", job=send_email_batch_job, queue_resource_key="email_requests_queue")
