"""Email dispatch: the doorbell sensor, the drain job, the daily sends asset and its checks."""

import dagster as dg

from pipelines.email.assets import email_sends_daily, email_sends_daily_job, email_sends_daily_schedule
from pipelines.email.jobs import send_email_batch_job
from pipelines.email.sensors import email_requests_sensor
from resources.email_settings import EmailSettingsResource

defs = dg.Definitions(
    assets=[email_sends_daily],
    jobs=[send_email_batch_job, email_sends_daily_job],
    sensors=[email_requests_sensor],
    schedules=[email_sends_daily_schedule],
    # The lead may move this into pipelines/resource_defs.py (then delete it here).
    resources={"email_settings": EmailSettingsResource(sender=dg.EnvVar("EMAIL_SENDER"))},
)
