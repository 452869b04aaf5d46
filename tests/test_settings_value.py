"""settings.value: the one reader of environment variables, limited to the declared ones."""

import pytest

from pipelines import settings
from pipelines.billing.tenant import Tenant, tenant_from_env


def test_reads_a_declared_variable_from_the_environment_or_a_mapping(monkeypatch):
    monkeypatch.setenv("STRIPE_DOMAIN", "pypi.org")
    assert settings.value("STRIPE_DOMAIN") == "pypi.org"
    assert settings.value("STRIPE_DOMAIN", {"STRIPE_DOMAIN": "test.pypi.org"}) == "test.pypi.org"
    monkeypatch.delenv("STRIPE_DOMAIN")
    assert settings.value("STRIPE_DOMAIN") is None


def test_refuses_a_variable_the_list_does_not_declare(monkeypatch):
    monkeypatch.setenv("MAILROOM_UNDECLARED", "x")
    with pytest.raises(KeyError, match="MAILROOM_UNDECLARED is not a setting"):
        settings.value("MAILROOM_UNDECLARED")


def test_tenant_and_dispatch_read_through_it(monkeypatch):
    from pipelines.email.dispatch import dispatch

    assert tenant_from_env({"STRIPE_BILLING_SERVICE": "warehouse", "STRIPE_DOMAIN": ""}) == Tenant("warehouse", "localhost")
    monkeypatch.delenv("EMAIL_REQUESTS_QUEUE", raising=False)
    with pytest.raises(ValueError, match="EMAIL_REQUESTS_QUEUE is not set"):
        dispatch("password-reset", [{"email": "a@example.org", "verified": True}],
                 {"n_hours": 1, "token": "t", "username": "u"})
