"""Keep a request's sensitive context values out of DuckDB, logs, Dagster metadata and error messages.

Bodies as a whole are redacted by the consumer kit (pipelines/common/redaction.py); here are the
per-request rules: the values the catalogue marks sensitive, and Warehouse's remote-IP rule."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pipelines.common.redaction import REDACTED, RedactionRules
from pipelines.email.catalogue import KindSpec, all_sensitive_names, catalogue

_MIN_SECRET_LEN = 4  # shorter values would redact ordinary words


class Redactor:
    """Replaces every occurrence of the given secret values in a text."""

    def __init__(self, secrets: Iterable[Any] = ()):
        values = sorted({str(s) for s in secrets if s is not None and len(str(s)) >= _MIN_SECRET_LEN},
                        key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def __call__(self, text: str | None) -> str | None:
        if text is None or self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)


def sensitive_values(context: dict[str, Any], spec: KindSpec) -> list[Any]:
    return [context[name] for name in spec.sensitive if name in context]


def redactor_for(context: dict[str, Any], spec: KindSpec) -> Redactor:
    return Redactor(sensitive_values(context, spec))


def keep_remote_ip(remote_ip: str | None, acting_user: bool) -> str | None:
    """Warehouse's _redact_ip rule: the IP is only kept when the recipient triggered the email."""
    return remote_ip if acting_user else None


def redact_raw_body(body: str | bytes, kinds: dict[str, KindSpec] | None = None) -> str:
    """A request body as quarantine keeps it: the consumer kit's redaction
    (pipelines/common/redaction.py) with the catalogue's sensitive variables as secret field names."""
    kinds = kinds if kinds is not None else catalogue()
    return RedactionRules(secret_names=all_sensitive_names(kinds)).body(body).text
