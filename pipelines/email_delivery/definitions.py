"""SES notification definitions: ingestion, replay, retention, reporting assets and checks."""

import dagster as dg

from pipelines.email_delivery.assets import email_delivery_daily, email_status, ses_reputation
from pipelines.email_delivery.jobs import ingest_ses_notifications_job, replay_ses_quarantine_job, ses_cleanup_job
from pipelines.email_delivery.schedules import ses_cleanup_schedule
from pipelines.email_delivery.sensors import ses_notifications_sensor
from resources.aws import SQSQueueResource
from resources.sns_verifier import SnsVerifierResource


def ses_resources() -> dict[str, object]:
    """Resources only this domain uses (the lead may move them into pipelines/resource_defs.py)."""
    return {
        "sns_verifier": SnsVerifierResource(
            topic_allowlist=dg.EnvVar("SNS_TOPIC_ALLOWLIST"),
            cert_dir=dg.EnvVar("SNS_CERT_DIR"),
            max_age_seconds=dg.EnvVar.int("SNS_MAX_AGE_SECONDS"),
            accept_raw=dg.EnvVar("SES_ACCEPT_RAW"),
        ),
        # Empty queue name: changes stay in address_status_changes only.
        "address_changes_queue": SQSQueueResource(region_name=dg.EnvVar("AWS_REGION"),
                                                  queue_name=dg.EnvVar("ADDRESS_CHANGES_QUEUE")),
    }


defs = dg.Definitions(
    assets=[email_status, email_delivery_daily, ses_reputation],
    jobs=[ingest_ses_notifications_job, replay_ses_quarantine_job, ses_cleanup_job],
    sensors=[ses_notifications_sensor],
    schedules=[ses_cleanup_schedule],
    resources=ses_resources(),
)
