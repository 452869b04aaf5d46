"""Fixtures for the SES delivery tests.

identity (function) -> SigningIdentity
    A fresh SNS signing identity whose certificate is in tmp_path/"certs" (where a CertStore for
    the tests looks it up); sign envelopes with tests.email_delivery.ses_helpers.signed.
db (function) -> DuckDBResource
    A fresh DuckDB file under tmp_path with every table of the project, created on first use.
"""

from __future__ import annotations

import pytest

from pipelines.store.schema import database
from tests.email_delivery.ses_helpers import write_identity


@pytest.fixture
def identity(tmp_path):
    return write_identity(tmp_path / "certs")


@pytest.fixture
def db(tmp_path):
    return database(str(tmp_path / "mailroom.duckdb"))
