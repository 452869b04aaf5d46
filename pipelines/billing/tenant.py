"""Which platform a Stripe object belongs to: Warehouse's `billing_service` and `domain` metadata.

Every customer and subscription we create carries them (and the organisation id), so the event
filter can skip objects of another service sharing the Stripe account.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines import settings

# The same settings the ingestion's tenant filter reads (pipelines/settings.py), so what this
# deployment creates is never skipped as another's.
BILLING_SERVICE_VAR = "STRIPE_BILLING_SERVICE"
BILLING_DOMAIN_VAR = "STRIPE_DOMAIN"


@dataclass(frozen=True)
class Tenant:
    billing_service: str = "pypi"
    domain: str = "localhost"

    def metadata(self, organization_id: str | None = None) -> dict[str, str]:
        meta = {"billing_service": self.billing_service, "domain": self.domain}
        if organization_id is not None:
            meta["organization_id"] = str(organization_id)
        return meta


def tenant_from_resource(resource) -> Tenant:
    """From the StripeResource's billing_service / domain (empty: the defaults)."""
    default = Tenant()
    return Tenant(billing_service=resource.billing_service or default.billing_service,
                  domain=resource.domain or default.domain)


def tenant_from_env(environ=None) -> Tenant:
    default = Tenant()
    return Tenant(billing_service=settings.value(BILLING_SERVICE_VAR, environ) or default.billing_service,
                  domain=settings.value(BILLING_DOMAIN_VAR, environ) or default.domain)
