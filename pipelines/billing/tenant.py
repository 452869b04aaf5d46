"""Which platform a Stripe object belongs to: Warehouse's `billing_service` and `domain` metadata.

Every customer and subscription we create carries them (and the organisation id), so the event
filter can skip objects of another service sharing the Stripe account.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

BILLING_SERVICE_VAR = "BILLING_SERVICE"
BILLING_DOMAIN_VAR = "BILLING_DOMAIN"


@dataclass(frozen=True)
class Tenant:
    billing_service: str = "mailroom"
    domain: str = "localhost"

    def metadata(self, organization_id: str | None = None) -> dict[str, str]:
        meta = {"billing_service": self.billing_service, "domain": self.domain}
        if organization_id is not None:
            meta["organization_id"] = str(organization_id)
        return meta


def tenant_from_env() -> Tenant:
    default = Tenant()
    return Tenant(billing_service=os.environ.get(BILLING_SERVICE_VAR) or default.billing_service,
                  domain=os.environ.get(BILLING_DOMAIN_VAR) or default.domain)
