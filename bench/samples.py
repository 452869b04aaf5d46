"""Plausible context values for every kind of the catalogue (benchmarks and tests)."""

from __future__ import annotations

from typing import Any

from pipelines.email.catalogue import KindSpec

_INT_VARIABLES = {"n_hours": 6, "days": 30, "days_remaining": 7}


def sample_value(name: str) -> Any:
    """A plausible value for a context variable, by its name."""
    if name in _INT_VARIABLES:
        return _INT_VARIABLES[name]
    if name == "token":
        return "tok_SAMPLE.Secret-value_123"
    if name.endswith("email") or name.endswith("email_address"):
        return f"{name.replace('_', '-')}@example.org"
    if name.endswith("_url") or name.endswith("_link"):
        return f"https://example.org/{name}/123"
    if name == "amount":
        return "12.00"
    if name == "currency":
        return "USD"
    if name.endswith("_date") or name in ("ends_at",):
        return "2026-12-01"
    if name == "admin_initiated":
        return False
    return f"sample {name.replace('_', ' ')}"


def sample_context(spec: KindSpec, with_optional: bool = True) -> dict[str, Any]:
    names = spec.variables if with_optional else spec.required
    return {n: sample_value(n) for n in names}
