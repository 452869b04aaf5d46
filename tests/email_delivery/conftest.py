"""Fixtures for the SES delivery tests.

identity (function) -> SigningIdentity
    An SNS signing identity whose certificate is in tmp_path/"certs" (where a CertStore for the
    test looks it up); sign envelopes with tests.email_delivery.ses_helpers.signed. The RSA key is
    made once per session (a key costs up to a second of CPU); a test that needs a second,
    different key makes one with ses_helpers.write_identity(dir).
db (function) -> DuckDBResource
    A fresh DuckDB file under tmp_path with every table of the project, created on first use.
"""

from __future__ import annotations

import pytest

from devstack.sns_signer import generate_signing_identity
from pipelines.schema import database
from tests.email_delivery.ses_helpers import write_identity


@pytest.fixture(scope="session")
def signing_identity():
    return generate_signing_identity()


@pytest.fixture
def identity(tmp_path, signing_identity):
    return write_identity(tmp_path / "certs", signing_identity)


@pytest.fixture
def db(tmp_path):
    return database(str(tmp_path / "mailroom.duckdb"))
