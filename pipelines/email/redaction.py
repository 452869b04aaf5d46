"""Keep sensitive context values out of DuckDB, logs, Dagster metadata and error messages."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import orjson

from pipelines.common.quarantine import storable
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


# Keys whose values are secrets whatever the kind says: the catalogue's sensitive variables are
# added to these. Matched anywhere in a key, so over-masking (a "monkey" field) is the price.
SECRET_KEY_WORDS = ("token", "password", "passwd", "secret", "key", "auth", "credential", "signature",
                    "session", "cookie")
MAX_STORED_BODY = 256 * 1024   # the SQS message limit: anything longer is not a real request


def _secret_key_re(names: Iterable[str]) -> re.Pattern[str]:
    words = sorted({*SECRET_KEY_WORDS, *names}, key=len, reverse=True)
    return re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE)


@lru_cache(maxsize=8)
def _text_pattern(key_words: str) -> re.Pattern[str]:
    # A key that looks secret, quoted or not, possibly JSON-escaped any number of times (a request
    # encoded as a JSON string), then `:` or `=`, then its value up to the next quote, backslash,
    # separator or white space. The value may be cut off by truncation: then it runs to the end.
    # Keys are tried only where a word starts, and matched possessively: linear in the text.
    return re.compile(
        r'(?<![\w.-])(?=[\w.-]*?(?:' + key_words + r'))(?P<key>[\w.-]++)(?P<sep>\\*+"?\s*+[:=]\s*+(?:\\*")?)'
        r'(?P<value>(?!\[redacted\])[^"\\,;&}\]\s]+)', re.IGNORECASE)


def _mask_structure(data: Any, key_re: re.Pattern[str], found: list[str]) -> Any:
    """`data` with the value of every key that looks secret masked; iterative (no recursion
    limit to hit: orjson allows 1024 levels)."""
    root = [data]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        parent, index = stack.pop()
        value = parent[index]
        if isinstance(value, dict):
            copy = dict(value)
            parent[index] = copy
            for k in list(copy):
                if key_re.search(k) and copy[k] is not None and not isinstance(copy[k], (dict, list)):
                    found.append(str(copy[k]))
                    copy[k] = REDACTED
                else:
                    stack.append((copy, k))
        elif isinstance(value, list):
            copy = list(value)
            parent[index] = copy
            stack.extend((copy, i) for i in range(len(copy)))
    return root[0]


def redact_raw_body(body: str | bytes, kinds: dict[str, KindSpec] | None = None) -> str:
    """A quarantined request body with every value that looks secret masked.

    The body is parsed with limits (orjson: 1024 levels at most, nothing unstorable). When it is
    a JSON object, every field named like a secret (the catalogue's sensitive variables, or a
    word of SECRET_KEY_WORDS) is masked wherever it is. Then, and for a body whose structure
    cannot be trusted (not JSON, or a request encoded inside a JSON string), the text itself is
    masked: `"key": value` and `key=value` for such keys, at any level of JSON escaping, and
    every secret value found anywhere else it appears. A body over MAX_STORED_BODY is not kept:
    only its size and digest.
    """
    if isinstance(body, bytes):
        body = body.decode("utf-8", "backslashreplace")
    size = len(body.encode("utf-8", "surrogatepass"))
    if size > MAX_STORED_BODY:
        digest = hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()
        return f"[body not kept: {size} bytes, sha256 {digest}]"
    kinds = kinds if kinds is not None else catalogue()
    key_re = _secret_key_re(all_sensitive_names(kinds))
    found: list[str] = []
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, (dict, list)):
        try:
            body = orjson.dumps(_mask_structure(data, key_re, found)).decode()
        except orjson.JSONEncodeError:   # over orjson's 254 levels for writing: the text pass only
            pass
    text = _text_pattern(key_re.pattern).sub(lambda m: _mask_match(m, found), body)
    # The same values wherever else they appear (a token repeated in a URL); JSON literals are
    # left alone so a masked body stays JSON.
    return storable(Redactor(v for v in found if v not in ("true", "false", "null"))(text))


def _mask_match(m: re.Match[str], found: list[str]) -> str:
    found.append(m.group("value").strip("\\"))
    return m.group("key") + m.group("sep") + REDACTED
