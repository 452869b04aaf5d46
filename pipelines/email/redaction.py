"""Keep sensitive context values out of DuckDB, logs, Dagster metadata and error messages."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from pipelines.email.catalogue import KindSpec, all_sensitive_names, catalogue

REDACTED = "[redacted]"
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


def _json_string_field(name: str) -> re.Pattern[str]:
    # the value may be cut off by truncation: then it runs to the end of the text
    return re.compile(r'("' + re.escape(name) + r'"\s*:\s*)"(?:[^"\\]|\\.)*(?:"|\\?$)')


def redact_raw_body(body: str, kinds: dict[str, KindSpec] | None = None) -> str:
    """A quarantined request body with sensitive context values replaced.

    Parseable JSON: the kind's sensitive variables (every kind's, if the kind is unknown) are
    replaced in `context`. Unparseable text: any JSON-looking string field named like a
    sensitive variable is replaced, best effort.
    """
    kinds = kinds if kinds is not None else catalogue()
    names = all_sensitive_names(kinds)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("context"), dict):
        spec = kinds.get(data.get("kind")) if isinstance(data.get("kind"), str) else None
        secret = (spec.sensitive | names) if spec else names
        values = [v for k, v in data["context"].items() if k in secret and v is not None]
        data["context"] = {k: (REDACTED if k in secret and v is not None else v) for k, v in data["context"].items()}
        return Redactor(values)(json.dumps(data, separators=(",", ":"), ensure_ascii=False))
    for name in names:
        body = _json_string_field(name).sub(lambda m: m.group(1) + json.dumps(REDACTED), body)
    return body
