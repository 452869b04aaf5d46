"""The interface email dispatch needs from a transport (SES, SMTP, console in resources/)."""

from __future__ import annotations

from typing import Protocol

from resources.outgoing_email import OutgoingEmail


class EmailTransport(Protocol):
    def send(self, email: OutgoingEmail) -> str:
        """Send one message; return the provider's message id. Raises TransientSendError or
        PermanentSendError (resources.outgoing_email) when the provider refuses it."""
        ...

    def max_send_rate(self) -> float | None:
        """Messages per second the provider allows, or None for no limit."""
        ...
