"""Chooses the transport (EMAIL_TRANSPORT) at run time."""

from __future__ import annotations

import dagster as dg

from resources.ses import SESSenderResource
from resources.smtp import ConsoleSenderResource, SMTPSenderResource


class EmailSenderResource(dg.ConfigurableResource):
    transport: str  # ses, smtp or console (EMAIL_TRANSPORT)
    ses: SESSenderResource
    smtp: SMTPSenderResource
    console: ConsoleSenderResource

    def get_transport(self) -> SESSenderResource | SMTPSenderResource | ConsoleSenderResource:
        transports = {"ses": self.ses, "smtp": self.smtp, "console": self.console}
        if self.transport not in transports:
            raise ValueError(f"EMAIL_TRANSPORT must be one of ses, smtp, console; got {self.transport!r}")
        return transports[self.transport]
