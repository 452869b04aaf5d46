"""Every environment variable the code location reads, with how to check it.

The single list behind `python -m devstack check`, the README's table and the tests
that keep them in step. The table's local column is what `python -m devstack env` prints for the
default stack (devstack/env.py), not a copy kept here. Resources read these through dg.EnvVar at
run time; code outside Dagster (dispatch(), the command-line tools) reads them through `value()`,
never os.environ. Nothing here reads the environment on import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass


class SettingsError(ValueError):
    pass


def _any(_: str) -> str | None:
    return None


def _nonempty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _port(v: str) -> str | None:
    return None if v.isdigit() and 0 < int(v) < 65536 else "must be a port number 1-65535"


def _int_min(minimum: int) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        return None if re.fullmatch(r"\d+", v) and int(v) >= minimum else f"must be an integer >= {minimum}"
    return check


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        return None if v in choices else f"must be one of {', '.join(choices)}"
    return check


def _email(v: str) -> str | None:
    return None if re.fullmatch(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+|.*<[^@\s<>]+@[^@\s<>]+>", v) else "must be an email address"


def _url(v: str) -> str | None:
    return None if re.match(r"https?://[^\s/]+", v) else "must be an http(s) URL"


def _postgres_url(v: str) -> str | None:
    return None if not v or re.match(r"postgres(ql)?://", v) else "must be empty or a postgresql:// URL"


def _asset_store_url(v: str) -> str | None:
    return None if not v or re.match(r"s3://[^/\s]+", v) or v.startswith(("/", "file:///")) else \
        "must be empty, s3://bucket/prefix or an absolute directory path"


def _bool(v: str) -> str | None:
    return None if v.lower() in ("true", "false") else "must be true or false"


@dataclass(frozen=True)
class Setting:
    name: str
    meaning: str
    production: str
    check: Callable[[str], str | None] = _nonempty
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("AWS_REGION", "AWS region of SQS, SNS and SES", "us-west-2"),
    Setting("DUCKDB_PATH", "DuckDB database file", "/var/lib/mailroom/mailroom.duckdb"),
    Setting("MAILROOM_STORE", "Store engine: duckdb (every table in the file at DUCKDB_PATH, one host) or "
            "postgres (the ledgers in PostgreSQL at DATABASE_URL, the reports in ASSET_STORE_URL; several "
            "hosts, several drains per queue): docs/postgres.md", "postgres", _one_of("duckdb", "postgres")),
    Setting("DATABASE_URL", "PostgreSQL system of record, used when MAILROOM_STORE=postgres (empty: none)",
            "(secret) postgresql://mailroom@db.internal:5432/mailroom", _postgres_url, secret=True),
    Setting("ASSET_STORE_URL", "Where the report tables are published as Parquet (one object per table) when "
            "MAILROOM_STORE=postgres, for every host and operator to read: s3://bucket/prefix (AWS_ENDPOINT_URL "
            "applies) or an absolute directory (docs/asset-store.md; empty: none)",
            "s3://mailroom-assets/reports", _asset_store_url),
    Setting("EMAIL_REQUESTS_QUEUE", "SQS queue the application puts email requests on", "prod-email-requests"),
    Setting("SES_NOTIFICATIONS_QUEUE", "SQS queue subscribed to the SES notifications topic", "prod-ses-notifications"),
    Setting("STRIPE_EVENTS_QUEUE", "SQS queue of Stripe events", "prod-stripe-events"),
    Setting("EMAIL_TRANSPORT", "How email leaves: ses, smtp or console", "ses", _one_of("ses", "smtp", "console")),
    Setting("EMAIL_SENDER", "Default From address", "PyPI <noreply@pypi.org>", _email),
    Setting("SES_CONFIGURATION_SET", "SES configuration set for sends (empty: none)", "pypi-transactional", _any),
    Setting("SES_MAX_SEND_RATE", "Sends per second; 0 reads SES GetAccount SendQuota", "0", _int_min(0)),
    Setting("SMTP_HOST", "SMTP relay host", "smtp.example.net"),
    Setting("SMTP_PORT", "SMTP relay port", "587", _port),
    Setting("SMTP_SECURITY", "none, starttls or tls", "starttls", _one_of("none", "starttls", "tls")),
    Setting("SMTP_USERNAME", "SMTP login (empty: no auth)", "mailroom", _any),
    Setting("SMTP_PASSWORD", "SMTP password", "(secret)", _any, secret=True),
    Setting("SNS_TOPIC_ALLOWLIST", "Comma-separated SNS topic ARNs whose messages are accepted",
            "arn:aws:sns:us-west-2:<acct>:ses-notifications"),
    Setting("SNS_CERT_DIR", "Local SNS signing-certificate store (empty: fetch the https SigningCertURL)",
            "", _any),
    Setting("SNS_MAX_AGE_SECONDS", "Oldest SNS message accepted, by its Timestamp (0: no limit)", "3600", _int_min(0)),
    Setting("SES_ACCEPT_RAW", "Accept raw SES JSON (SNS raw delivery on; no signature to check)", "false", _bool),
    Setting("ADDRESS_CHANGES_QUEUE", "SQS queue for address verification changes (empty: table only)", "prod-address-changes", _any),
    Setting("STRIPE_API_KEY", "Stripe secret key", "(secret) sk_live_...", secret=True),
    Setting("STRIPE_WEBHOOK_SECRET", "Stripe webhook signing secret", "(secret) whsec_...", secret=True),
    Setting("STRIPE_API_BASE", "Stripe API base address", "https://api.stripe.com", _url),
    Setting("STRIPE_EVENTBRIDGE_SOURCES", "Comma-separated EventBridge partner event sources accepted on stripe-events",
            "aws.partner/stripe.com/ed_<id>"),
    Setting("STRIPE_WEBHOOK_TOLERANCE_SECONDS", "Oldest webhook signature accepted, in seconds (0: no limit)",
            "300", _int_min(0)),
    Setting("STRIPE_BILLING_SERVICE", "metadata.billing_service of this deployment; events naming another are skipped",
            "pypi", _any),
    Setting("STRIPE_DOMAIN", "metadata.domain of this deployment; events naming another are skipped",
            "pypi.org", _any),
    Setting("STRIPE_RATE_LIMIT", "Stripe requests per second, client side (0: 100 live, 25 with a test key)",
            "0", _int_min(0)),
)


# Optional variables that only the command-line tools read (python -m pipelines.ops, the billing
# loader); the code location needs none of them, so `validate` does not ask for them.
TOOL_VARIABLES: dict[str, str] = {
    "DAGSTER_HOME": "the Dagster instance the operator commands launch on (Dagster's own variable)",
    "MAILROOM_UI_URL": "the Dagster UI's address in the links the operator commands print (default http://127.0.0.1:3000)",
}

_NAMES = frozenset(s.name for s in SETTINGS) | frozenset(TOOL_VARIABLES)


def value(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The variable `name` from `environ` (default: the process environment), None when unset.
    Only a variable listed above can be read, so that list stays the whole of them."""
    if name not in _NAMES:
        raise KeyError(f"{name} is not a setting listed in pipelines/settings.py")
    return (os.environ if environ is None else environ).get(name)


def validate(env: Mapping[str, str], settings: tuple[Setting, ...] = SETTINGS) -> None:
    """Raise SettingsError naming every missing or malformed variable (never echoing secrets)."""
    problems = []
    for s in settings:
        if s.name not in env:
            problems.append(f"{s.name} is not set ({s.meaning})")
            continue
        why = s.check(env[s.name])
        if why:
            shown = "" if s.secret else f" (got {env[s.name]!r})"
            problems.append(f"{s.name} {why}{shown}")
    if env.get("MAILROOM_STORE") == "postgres" and "DATABASE_URL" in env and not env["DATABASE_URL"]:
        problems.append("DATABASE_URL must be set when MAILROOM_STORE=postgres")
    if env.get("MAILROOM_STORE") == "postgres" and "ASSET_STORE_URL" in env and not env["ASSET_STORE_URL"]:
        problems.append("ASSET_STORE_URL must be set when MAILROOM_STORE=postgres (the report tables go there)")
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))


def markdown_table(local: Mapping[str, str]) -> str:
    """The README's environment-variable table (`python -m pipelines.settings`); `local` holds
    what the local stack sets (devstack.env.documented_defaults), so that column is never typed."""
    missing = [s.name for s in SETTINGS if s.name not in local]
    if missing:
        raise SettingsError(f"the local stack sets no value for {', '.join(missing)}")
    lines = ["| variable | meaning | local default (`make dev`, `devstack env`) | production example |",
             "|---|---|---|---|"]
    for s in SETTINGS:
        lines.append(f"| `{s.name}` | {s.meaning} | {_cell(local[s.name])} | {_cell(s.production)} |")
    return "\n".join(lines)


def _cell(value: str) -> str:
    return f"`{value}`" if value else "(empty)"


if __name__ == "__main__":
    # The local column is the devstack's own configuration (the code location never imports it).
    from devstack.env import documented_defaults

    print(markdown_table(documented_defaults()))
