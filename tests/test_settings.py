import pytest

from pipelines.settings import SETTINGS, SettingsError, validate

GOOD = {
    "AWS_REGION": "us-east-1", "DUCKDB_PATH": "/tmp/x.duckdb", "MAILROOM_STORE": "duckdb", "DATABASE_URL": "",
    "ASSET_STORE_URL": "", "EMAIL_REQUESTS_QUEUE": "email-requests",
    "SES_NOTIFICATIONS_QUEUE": "ses-notifications", "STRIPE_EVENTS_QUEUE": "stripe-events",
    "EMAIL_TRANSPORT": "smtp", "EMAIL_SENDER": "noreply@mailroom.test", "SES_CONFIGURATION_SET": "",
    "SES_MAX_SEND_RATE": "0", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": "2525", "SMTP_SECURITY": "none",
    "SMTP_USERNAME": "", "SMTP_PASSWORD": "", "SNS_TOPIC_ALLOWLIST": "arn:aws:sns:us-east-1:1:t",
    "SNS_CERT_DIR": "", "SNS_MAX_AGE_SECONDS": "3600", "SES_ACCEPT_RAW": "false", "ADDRESS_CHANGES_QUEUE": "",
    "STRIPE_API_KEY": "sk_test_x", "STRIPE_WEBHOOK_SECRET": "whsec_x", "STRIPE_API_BASE": "http://127.0.0.1:1",
    "STRIPE_EVENTBRIDGE_SOURCES": "aws.partner/stripe.com/ed_test_1", "STRIPE_WEBHOOK_TOLERANCE_SECONDS": "300",
    "STRIPE_BILLING_SERVICE": "pypi", "STRIPE_DOMAIN": "pypi.org", "STRIPE_RATE_LIMIT": "0",
}


def test_complete_settings_pass():
    assert {s.name for s in SETTINGS} == set(GOOD)
    validate(GOOD)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_missing_variable_is_named(name):
    env = dict(GOOD)
    del env[name]
    with pytest.raises(SettingsError, match=rf"\b{name} is not set"):
        validate(env)


@pytest.mark.parametrize(
    "name,value,why",
    [
        ("SMTP_PORT", "smtp", "port number"),
        ("SMTP_PORT", "70000", "port number"),
        ("EMAIL_TRANSPORT", "sendgrid", "one of ses, smtp, console"),
        ("SMTP_SECURITY", "ssl", "one of none, starttls, tls"),
        ("SES_MAX_SEND_RATE", "-1", "integer"),
        ("EMAIL_SENDER", "not-an-address", "email address"),
        ("STRIPE_API_BASE", "api.stripe.com", "URL"),
        ("STRIPE_WEBHOOK_TOLERANCE_SECONDS", "5m", "integer >= 0"),
        ("STRIPE_RATE_LIMIT", "-1", "integer >= 0"),
        ("SES_ACCEPT_RAW", "yes", "true or false"),
        ("ASSET_STORE_URL", "http://bucket/x", "s3://bucket/prefix"),
        ("ASSET_STORE_URL", "relative/dir", "absolute directory"),
    ],
)
def test_malformed_variable_is_named(name, value, why):
    with pytest.raises(SettingsError, match=rf"{name} .*{why}"):
        validate({**GOOD, name: value})


def test_secret_values_are_not_echoed():
    with pytest.raises(SettingsError) as err:
        validate({**GOOD, "STRIPE_API_KEY": "   "})
    assert "STRIPE_API_KEY" in str(err.value)
    assert "'   '" not in str(err.value)


def test_asset_store_url_forms_and_the_postgres_profile_needs_one():
    for good in ("s3://mailroom-assets/reports", "s3://b", "/srv/assets", "file:///srv/assets"):
        validate({**GOOD, "ASSET_STORE_URL": good})
    pg = {**GOOD, "MAILROOM_STORE": "postgres", "DATABASE_URL": "postgresql://u@h/db"}
    with pytest.raises(SettingsError, match="ASSET_STORE_URL must be set when MAILROOM_STORE=postgres"):
        validate(pg)
    validate({**pg, "ASSET_STORE_URL": "s3://mailroom-assets/reports"})
