"""Every resource the code location uses, configured from environment variables.

Values are dg.EnvVar references: nothing reads the environment at import time; a
missing variable fails the run (or `python -m devstack check`) naming the variable.
The README's table lists each variable.
"""

from __future__ import annotations

import dagster as dg

from pipelines.queues import QUEUE_SPECS
from pipelines.store_resource import MailroomStore
from resources.aws import SNSResource, SQSQueueResource
from resources.email_sender import EmailSenderResource
from resources.email_settings import EmailSettingsResource
from resources.ses import SESSenderResource
from resources.smtp import ConsoleSenderResource, SMTPSenderResource
from resources.sns_verifier import SnsVerifierResource
from resources.stripe_client import StripeResource
from resources.templates import TemplatesResource

REGION = dg.EnvVar("AWS_REGION")


def build_resources() -> dict[str, object]:
    return {
        # The ledgers (MAILROOM_STORE: the DuckDB file or PostgreSQL) and the report workspace. The schema
        # is code (pipelines/schema.py, the migrations), not config.
        "store": MailroomStore(engine=dg.EnvVar("MAILROOM_STORE"), duckdb_path=dg.EnvVar("DUCKDB_PATH"),
                               database_url=dg.EnvVar("DATABASE_URL"),
                               asset_store_url=dg.EnvVar("ASSET_STORE_URL"), region=REGION),
        # Each drained queue's resource, named after its source (email_requests_queue, ...).
        **{spec.resource_key: SQSQueueResource(region_name=REGION, queue_name=dg.EnvVar(spec.env_var))
           for spec in QUEUE_SPECS},
        "sns": SNSResource(region_name=REGION),
        "email_sender": EmailSenderResource(
            transport=dg.EnvVar("EMAIL_TRANSPORT"),
            ses=SESSenderResource(
                region_name=REGION,
                configuration_set=dg.EnvVar("SES_CONFIGURATION_SET"),
                max_rate=dg.EnvVar.int("SES_MAX_SEND_RATE"),
            ),
            smtp=SMTPSenderResource(
                host=dg.EnvVar("SMTP_HOST"),
                port=dg.EnvVar.int("SMTP_PORT"),
                security=dg.EnvVar("SMTP_SECURITY"),
                username=dg.EnvVar("SMTP_USERNAME"),
                password=dg.EnvVar("SMTP_PASSWORD"),
            ),
            console=ConsoleSenderResource(),
        ),
        "templates": TemplatesResource(),
        "email_settings": EmailSettingsResource(sender=dg.EnvVar("EMAIL_SENDER")),
        "sns_verifier": SnsVerifierResource(
            topic_allowlist=dg.EnvVar("SNS_TOPIC_ALLOWLIST"),
            cert_dir=dg.EnvVar("SNS_CERT_DIR"),
            max_age_seconds=dg.EnvVar.int("SNS_MAX_AGE_SECONDS"),
            accept_raw=dg.EnvVar("SES_ACCEPT_RAW"),
        ),
        # Empty queue name: address changes stay in address_status_changes only.
        "address_changes_queue": SQSQueueResource(region_name=REGION, queue_name=dg.EnvVar("ADDRESS_CHANGES_QUEUE")),
        "stripe": StripeResource(
            api_key=dg.EnvVar("STRIPE_API_KEY"),
            webhook_secret=dg.EnvVar("STRIPE_WEBHOOK_SECRET"),
            api_base=dg.EnvVar("STRIPE_API_BASE"),
            rate_limit_per_second=dg.EnvVar.int("STRIPE_RATE_LIMIT"),
            eventbridge_sources=dg.EnvVar("STRIPE_EVENTBRIDGE_SOURCES"),
            webhook_tolerance_seconds=dg.EnvVar.int("STRIPE_WEBHOOK_TOLERANCE_SECONDS"),
            billing_service=dg.EnvVar("STRIPE_BILLING_SERVICE"),
            domain=dg.EnvVar("STRIPE_DOMAIN"),
        ),
    }
