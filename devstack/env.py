"""The environment the code location needs: one source (stack_env) and one validator (check_env)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from devstack.stack import (DEFAULT_PORTS, REGION, STRIPE_API_KEY, STRIPE_SOURCE_ID, STRIPE_WEBHOOK_SECRET,
                            config_from_env)
from devstack.state import DEFAULT_STATE_DIR, REPO_ROOT, StackState
from devstack.topology import ASSET_BUCKET, ASSET_PREFIX, CONFIGURATION_SET, SES_SENDER, TOPIC_NAME
from pipelines.settings import SettingsError, validate

DAGSTER_HOME = REPO_ROOT / ".dagster"


def stack_env(state: StackState) -> dict[str, str]:
    """Every variable the code location reads, with the values for this running stack."""
    return {
        "AWS_ENDPOINT_URL": state.endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "DUCKDB_PATH": state.duckdb_path,
        "MAILROOM_STORE": "duckdb",
        "DATABASE_URL": "",
        "ASSET_STORE_URL": f"s3://{ASSET_BUCKET}/{ASSET_PREFIX}",
        "EMAIL_REQUESTS_QUEUE": "email-requests",
        "SES_NOTIFICATIONS_QUEUE": "ses-notifications",
        "STRIPE_EVENTS_QUEUE": "stripe-events",
        "EMAIL_TRANSPORT": "smtp",
        "EMAIL_SENDER": SES_SENDER,
        "SES_CONFIGURATION_SET": CONFIGURATION_SET,
        "SES_MAX_SEND_RATE": "0",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(state.smtp_port),
        "SMTP_SECURITY": "none",
        "SMTP_USERNAME": "",
        "SMTP_PASSWORD": "",
        "STRIPE_API_KEY": STRIPE_API_KEY,
        "STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
        "STRIPE_API_BASE": state.stripe_base,
        "STRIPE_EVENTBRIDGE_SOURCES": f"aws.partner/stripe.com/{STRIPE_SOURCE_ID}",
        "STRIPE_WEBHOOK_TOLERANCE_SECONDS": "300",
        "STRIPE_BILLING_SERVICE": "pypi",
        "STRIPE_DOMAIN": "localhost",
        "STRIPE_RATE_LIMIT": "0",
        "SNS_CERT_DIR": str(state.cert_dir),
        "SNS_TOPIC_ALLOWLIST": state.topic_arn,
        "SNS_MAX_AGE_SECONDS": "3600",
        "SES_ACCEPT_RAW": "false",
        "ADDRESS_CHANGES_QUEUE": "",
        "DAGSTER_HOME": str(DAGSTER_HOME),
    }


# `make dev` sends through moto's SES (the mailbox simulator then answers with deliveries,
# bounces and complaints); `python -m devstack env` prints the same, so a shell that evals it
# talks to the stack exactly as the dev code location does. EMAIL_TRANSPORT=smtp overrides both.
DEV_TRANSPORT = "ses"


def dev_env(state: StackState, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """stack_env as `make dev` runs it: EMAIL_TRANSPORT from the caller's environment, else ses."""
    env = stack_env(state)
    env["EMAIL_TRANSPORT"] = (environ or {}).get("EMAIL_TRANSPORT") or DEV_TRANSPORT
    return env


# moto's default account: the topic `ensure_topology` creates gets this ARN.
MOTO_ACCOUNT = "123456789012"


def configured_state() -> StackState:
    """The stack `python -m devstack up` starts with no DEVSTACK_* setting (state in .devstack/,
    the default ports), as its state.json will record it, without starting anything."""
    config = config_from_env({})
    return StackState(state_dir=str(config.state_dir), moto_port=config.moto_port, smtp_port=config.smtp_port,
                      stripe_port=config.stripe_port, duckdb_path=str(config.duckdb_path),
                      signature_version=config.signature_version,
                      topic_arn=f"arn:aws:sns:{REGION}:{MOTO_ACCOUNT}:{TOPIC_NAME}")


def as_documented(env: Mapping[str, str], state: StackState) -> dict[str, str]:
    """A running stack's variables as the docs show them: its state directory as `.devstack`
    (relative to the repository), its ports as the default ones (`DEVSTACK_*_PORT` unset)."""
    state_dir = str(Path(state.state_dir).resolve())
    shown = str(DEFAULT_STATE_DIR.relative_to(REPO_ROOT))
    ports = {state.moto_port: DEFAULT_PORTS["DEVSTACK_MOTO_PORT"], state.smtp_port: DEFAULT_PORTS["DEVSTACK_SMTP_PORT"],
             state.stripe_port: DEFAULT_PORTS["DEVSTACK_STRIPE_PORT"]}
    out = {}
    for name, value in env.items():
        if value == state_dir or value.startswith(state_dir + "/"):
            value = shown + value[len(state_dir):]
        elif name.endswith("_PORT") and value.isdigit():
            value = str(ports.get(int(value), value))
        else:
            for port, default in ports.items():
                value = value.replace(f"127.0.0.1:{port}", f"127.0.0.1:{default}")
        out[name] = value
    return out


def documented_defaults() -> dict[str, str]:
    """What `python -m devstack env` prints for the default stack (the README's "local default"
    column, `python -m pipelines.settings`)."""
    state = configured_state()
    return as_documented(dev_env(state), state)


def export_lines(env: Mapping[str, str]) -> str:
    import shlex

    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def check_env(environ: Mapping[str, str]) -> list[str]:
    """One line per missing or malformed variable, each naming it (pipelines.settings rules;
    secrets' values never shown). Empty when everything is fine."""
    try:
        validate(environ)
    except SettingsError as exc:
        return [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    return []
