"""Shared fixtures: a real local stack (moto server, SMTP sink, mailbox simulator, local Stripe) for the session.

Fixtures
--------
local_stack (session) -> LocalStack
    Started once on free ports in a temporary state directory and stopped at the end of the
    session (also if pytest is killed: the stack watches the pytest process). Attributes:
      env          dict[str, str]   devstack.env.stack_env(): every variable the code location reads
      endpoint     str              moto server, e.g. "http://127.0.0.1:54321" (SQS, SNS, SES, SESv2)
      smtp_host, smtp_port          the SMTP sink
      smtp         SinkReader       .messages() / .to(addr) / .wait_for(n) / .count() / .clear();
                                    each SunkMessage has mail_from, rcpt_tos, raw (bytes), message()
      cert_dir     Path             SNS_CERT_DIR: SimpleNotificationService-<hex>.pem (+ the key)
      signing      SigningIdentity  key, cert_pem, cert_url: sign your own envelopes with
                                    devstack.sns_signer.sign_envelope / notification_envelope /
                                    confirmation_envelope
      topic_arn    str              the SES notifications topic
      queue_urls   dict[str, str]   by name: email-requests, ses-notifications, stripe-events, <name>-dlq
      state        StackState       ports, pids, state_dir
      stripe_base  str              the local Stripe, e.g. "http://127.0.0.1:54322" (= env STRIPE_API_BASE);
                                    it delivers every event to stripe-events in an EventBridge envelope
    Methods:
      client(service)               a boto3 client for the stack ("sqs", "sns", "ses", "sesv2", ...)
      purge(*names)                 purge queues (default: all six)
      stripe_control(path, method="POST", **json) -> Any
                                    the local Stripe's /_control/<path> (advance, checkout_sessions/<id>/complete,
                                    flush, faults, delivery, reset, state/<type>...; see devstack.local_stripe.control)
      stripe_client()               a stripe.StripeClient talking to the local Stripe
      receive(queue, count, timeout=10.0, delete=True) -> list[dict]
                                    SQS messages (dicts with "Body", and "MessageAttributes" when the
                                    message has any) until `count` arrived or timeout
      notifications_for(message_id, count, timeout=10.0) -> list[dict]
                                    parsed SNS envelopes from ses-notifications whose SES
                                    mail.messageId is message_id (deleted); others are left visible

stack_env (function) -> dict[str, str]
    Applies local_stack.env with monkeypatch, with a fresh DUCKDB_PATH under tmp_path and
    DAGSTER_HOME a temporary copy of the project's .dagster/dagster.yaml; purges the six queues
    and clears the SMTP sink first, so tests don't see each other's messages. Returns the env
    as applied. The mailbox simulator answers SES sends within ~1 s: a test should still match
    notifications by its own MessageId (notifications_for does).

Mailbox simulator addresses (@simulator.amazonses.com): bounce, soft-bounce, complaint (Delivery
then Complaint), ooto (Delivery then transient Bounce), suppressed / suppressionlist; any other
address (any domain) gets a Delivery. SMTP sink faults: smtp-<code>-<n>[+tag]@any answers
<code> to RCPT the first n times for that exact address; smtp-<code>[+tag]@any always does.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devstack.env import DAGSTER_HOME, stack_env as build_stack_env
from devstack.smtp_sink import SinkReader
from devstack.sns_signer import SigningIdentity, load_or_create_signing_identity
from devstack.stack import aws_client, config_from_env, down, stripe_control, up
from devstack.state import StackState
from devstack.topology import NOTIFICATIONS_QUEUE


@dataclass
class LocalStack:
    state: StackState
    env: dict[str, str]
    smtp: SinkReader
    signing: SigningIdentity
    _clients: dict[str, Any] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return self.state.endpoint

    @property
    def smtp_host(self) -> str:
        return "127.0.0.1"

    @property
    def smtp_port(self) -> int:
        return self.state.smtp_port

    @property
    def cert_dir(self) -> Path:
        return self.state.cert_dir

    @property
    def topic_arn(self) -> str:
        return self.state.topic_arn

    @property
    def queue_urls(self) -> dict[str, str]:
        return self.state.queue_urls

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = aws_client(self.endpoint, service, max_pool_connections=32)
        return self._clients[service]

    @property
    def stripe_base(self) -> str:
        return self.state.stripe_base

    def stripe_control(self, path: str, method: str = "POST", **body: Any) -> Any:
        return stripe_control(self.state, path, method, **body)

    def stripe_client(self, **options: Any) -> Any:
        import stripe

        return stripe.StripeClient(self.env["STRIPE_API_KEY"], base_addresses={"api": self.stripe_base},
                                   stripe_version=stripe.api_version, **options)

    def purge(self, *names: str) -> None:
        sqs = self.client("sqs")
        for name in names or tuple(self.queue_urls):
            sqs.purge_queue(QueueUrl=self.queue_urls[name])

    def receive(self, queue: str, count: int, timeout: float = 10.0, delete: bool = True) -> list[dict]:
        sqs, url = self.client("sqs"), self.queue_urls[queue]
        got: list[dict] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       MessageAttributeNames=["All"]).get("Messages", [])
            got.extend(msgs)
            if delete and msgs:
                sqs.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)])
        return got

    def notifications_for(self, message_id: str, count: int, timeout: float = 10.0) -> list[dict]:
        sqs, url = self.client("sqs"), self.queue_urls[NOTIFICATIONS_QUEUE]
        found: list[dict] = []
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                         VisibilityTimeout=5).get("Messages", []):
                envelope = json.loads(m["Body"])
                try:
                    mail_id = json.loads(envelope["Message"])["mail"]["messageId"]
                except (KeyError, TypeError, ValueError):
                    mail_id = None
                if mail_id == message_id:
                    found.append(envelope)
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                else:
                    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"],
                                                  VisibilityTimeout=0)
        return found


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory):
    state_dir = tmp_path_factory.mktemp("devstack")
    # Every port free (0): several xdist workers start stacks at the same moment.
    config = config_from_env({"DEVSTACK_MOTO_PORT": "0", "DEVSTACK_SMTP_PORT": "0", "DEVSTACK_STRIPE_PORT": "0",
                              "DEVSTACK_MAIL_PORT": "0"}, state_dir=state_dir, watch_pid=os.getpid())
    state, _ = up(config)
    try:
        yield LocalStack(state=state, env=build_stack_env(state), smtp=SinkReader(state.sink_dir),
                         signing=load_or_create_signing_identity(state.cert_dir))
    finally:
        down(state_dir)


@pytest.fixture
def stack_env(local_stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(DAGSTER_HOME / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {**local_stack.env, "DUCKDB_PATH": str(tmp_path / "mailroom.duckdb"), "DAGSTER_HOME": str(dagster_home)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    local_stack.purge()
    local_stack.smtp.clear()
    return env


@pytest.fixture(params=["duckdb", "postgres"])
def profile_env(request: pytest.FixtureRequest, stack_env: dict[str, str],
                monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """stack_env in each store profile: `duckdb` as is; `postgres` with MAILROOM_STORE=postgres and
    DATABASE_URL a fresh migrated database on 127.0.0.1:5432, ASSET_STORE_URL a prefix of its own (skipped, saying so, when the server is
    unreachable; a failure under CI=true). Read the ledgers with tests.ledgers.rows(env, sql)."""
    if request.param == "duckdb":
        return stack_env
    url = request.getfixturevalue("_pg_database_for_profile")
    # Each test its own prefix in the stack's asset bucket: no report of an earlier test is loaded.
    assets = f"{stack_env['ASSET_STORE_URL']}/{uuid.uuid4().hex[:12]}"
    env = {**stack_env, "MAILROOM_STORE": "postgres", "DATABASE_URL": url, "ASSET_STORE_URL": assets}
    for name in ("MAILROOM_STORE", "DATABASE_URL", "ASSET_STORE_URL"):
        monkeypatch.setenv(name, env[name])
    return env


@pytest.fixture
def _pg_database_for_profile():
    from tests.servers import migrated_pg_database

    with migrated_pg_database() as url:
        yield url


# Markers are applied here, so a new test file gets them without remembering:
#   integration  starts servers (the local stack, PostgreSQL/RabbitMQ, `devstack dev`): any test using
#                local_stack or stack_env, the production profile's server fixtures; tests that start
#                servers on their own carry the marker explicitly.
#   property     a Hypothesis property test (@given), run at the profile registered below.
# The inner loop is `pytest -m "not integration and not property"`; `make test` and CI run everything.
SERVER_FIXTURES = frozenset({"pg", "celery_worker", "instance"})   # test_production_profile.py


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & {"local_stack", "stack_env"} or (
                item.path.name == "test_production_profile.py" and fixtures & SERVER_FIXTURES):
            item.add_marker(pytest.mark.integration)
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.property)
    if hasattr(config, "workerinput"):   # a pytest-xdist worker (`make test` runs several)
        items.sort(key=_xdist_order)


def _xdist_order(item: pytest.Item) -> int:
    """Long work first, so that no worker starts a long tail at the end: the modules built around
    one expensive fixture (marked xdist_group) and the long ones (marked long), then the tests that talk to servers, then the quick
    ones, which fill the gaps. `make test` hands out whole files (--dist loadfile: xdist's
    loadgroup does not group under pytest 9.2), in the order their first test has here. The sort
    is stable: a module's tests keep their order."""
    if item.get_closest_marker("xdist_group") or item.get_closest_marker("long"):
        return 0
    return 1 if item.get_closest_marker("integration") else 2


# Hypothesis profiles for the parsers' property tests (tests/strategies.py): "ci" runs in every
# suite run, "deep" before a release (HYPOTHESIS_PROFILE=deep). A failure prints its blob, to be
# replayed with @reproduce_failure.
from hypothesis import HealthCheck, settings as hypothesis_settings  # noqa: E402

_HYPOTHESIS = dict(deadline=None, print_blob=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                          HealthCheck.filter_too_much])
hypothesis_settings.register_profile("ci", max_examples=200, **_HYPOTHESIS)
hypothesis_settings.register_profile("deep", max_examples=2000, **_HYPOTHESIS)
hypothesis_settings.register_profile("quick", max_examples=20, **_HYPOTHESIS)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
