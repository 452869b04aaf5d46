"""Email dispatch settings: the default From address and the site named in every email."""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class EmailSettingsResource(dg.ConfigurableResource):
    sender: str = Field(description="Default From: an address or 'Name <address>' (EMAIL_SENDER).")
    site_name: str = "Mailroom"
    site_url: str = "https://mailroom.test"
