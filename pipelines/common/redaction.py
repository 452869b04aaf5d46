"""The one redaction every consumer's refused bodies, reasons and errors go through (pure).

`RedactionRules.body(text)` masks, in a body of any shape:
- the value under every key named like a secret (SECRET_KEY_WORDS, matched anywhere in the key,
  plus the consumer's own `secret_names`), whatever its type: a list or object under such a key
  is masked whole. In a JSON body this is done on the parsed structure, in JSON strings that hold
  JSON (double-encoded bodies, an SNS `Message`) too; then, and for any text that is not JSON,
  a text pass masks `key: value` / `key=value` pairs with single-, double-, un- or
  backslash-quoted keys, bracketed values whole, a header-like line to its end;
- value shapes that are secrets wherever they appear (SECRET_SHAPES: Stripe secret, restricted
  and webhook keys; AWS access key ids, and every 40-character secret-looking word beside one;
  `Bearer` / `Basic` credentials);
- every value found by the two passes, wherever else it appears: as is, JSON-escaped and
  URL-encoded. A URL-encoded body is decoded (up to three times) to find them.
A body over MAX_STORED_BODY keeps only its size and digest. A body in which nothing is masked is
kept byte for byte (a signature over it still verifies on replay).

`verbatim` names the JSON paths a consumer needs as they are to verify a message again on replay
(an SNS envelope's `Signature`): the key rule skips them, the shapes do not. They are message
signatures, not credentials: one is worth nothing for any other message.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

import orjson

REDACTED = "[redacted]"
MAX_STORED_BODY = 256 * 1024   # the SQS message limit: nothing longer reached us from a queue
# Keys whose values are secrets, matched anywhere in a key: over-masking (a "monkey" field) is the price.
SECRET_KEY_WORDS = ("token", "password", "passwd", "secret", "key", "auth", "credential", "signature",
                    "session", "cookie")
# Named like a secret, but not one, and in every message of a kind that replay must verify again:
# Stripe events' request.idempotency_key (masking it would leave no signed webhook replayable).
NOT_SECRET_KEYS = frozenset({"idempotency_key"})
_MIN_SECRET_LEN = 4            # shorter values would mask ordinary words wherever they appear
_NOT_SECRETS = frozenset({"true", "false", "null", "none", "True", "False", "None"})
_MAX_NESTED = 4                # JSON-in-a-JSON-string levels parsed; deeper ones get the text pass

SECRET_SHAPES = re.compile(
    r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{4,}"
    r"|whsec_[0-9A-Za-z+/=]{4,}"
    r"|(?<![0-9A-Z])(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Z])")
_AWS_KEY_ID = re.compile(r"(?<![0-9A-Z])(?:AKIA|ASIA)[0-9A-Z]{16}(?![0-9A-Z])")
_AWS_SECRET = re.compile(r"(?<![0-9A-Za-z/+=])[0-9A-Za-z/+]{40}(?![0-9A-Za-z/+=])")
_CREDENTIAL = re.compile(r"\b(?:Bearer|Basic)\s+(?P<value>[0-9A-Za-z\-._~+/]{4,}=*)", re.IGNORECASE)
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
# Where a verbatim value sits while the text pass runs (a private-use character: no body has it).
_PLACEHOLDER = "\ue000{}\ue000"
_PLACEHOLDER_RE = re.compile("\ue000(\\d+)\ue000")


@dataclass(frozen=True)
class Redacted:
    text: str
    found: tuple[str, ...]      # the secret values masked, to mask in anything else about the body

    @property
    def masked(self) -> bool:
        return bool(self.found) or REDACTED in self.text


def storable(text: str) -> str:
    """`text` with lone surrogates written as escapes: DuckDB (UTF-8) cannot store them."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def digest_only(body: str) -> str:
    raw = body.encode("utf-8", "surrogatepass")
    return f"[body not kept: {len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()}]"


@dataclass
class _State:
    masked: bool = False


@dataclass(frozen=True)
class RedactionRules:
    secret_names: frozenset[str] = frozenset()
    verbatim: frozenset[tuple[str, ...]] = frozenset()

    @cached_property
    def _key_re(self) -> re.Pattern[str]:
        words = sorted({*SECRET_KEY_WORDS, *self.secret_names}, key=len, reverse=True)
        return re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE)

    @cached_property
    def _pair_re(self) -> re.Pattern[str]:
        # A key that looks secret, quoted (', ", any number of backslashes before them) or not, then
        # `:` or `=`. Tried only where a word starts, matched possessively: linear in the text.
        return re.compile(
            r"(?<![\w.-])(?P<open>\\*+[\"'])?(?=[\w.-]*?(?:" + self._key_re.pattern + r"))(?P<key>[\w.-]++)"
            r"(?P<close>\\*+[\"'])?[ \t]*+(?P<sep>[:=])\s*+", re.IGNORECASE)

    def is_secret_key(self, key: str) -> bool:
        return key not in NOT_SECRET_KEYS and bool(self._key_re.search(key))

    # ---- bodies -----------------------------------------------------------------------------
    def body(self, body: str | bytes) -> Redacted:
        if isinstance(body, bytes):
            body = body.decode("utf-8", "backslashreplace")
        if len(body.encode("utf-8", "surrogatepass")) > MAX_STORED_BODY:
            return Redacted(digest_only(body), ())
        found: list[str] = []
        kept: list[str] = []
        state = _State()
        structured = self._structured(body, found, kept, state, 0)
        text = _mask_values(self._text_pass(structured, found), found)
        if not state.masked and not found and text == structured:
            return Redacted(storable(body), ())
        text = _PLACEHOLDER_RE.sub(lambda m: orjson.dumps(kept[int(m.group(1))]).decode()[1:-1], text)
        return Redacted(storable(text), tuple(dict.fromkeys(found)))

    def text(self, text: str | None, found: Iterable[str] = (), pairs: bool = True) -> str | None:
        """Free text (a reason, an error): the values found in its body, the secret shapes and,
        with `pairs`, `key: value` pairs. Prose such as "bad Stripe-Signature: ..." is no pair: a
        reason written by our code takes pairs=False."""
        if text is None:
            return None
        values = list(found)
        if pairs:
            text = self._text_pass(text, values)
        else:
            _find_shapes(text, values)
        return storable(_mask_values(text, values))

    def _structured(self, body: str, found: list[str], kept: list[str], state: _State, depth: int) -> str:
        """The body with secret-keyed values masked (and verbatim ones set aside) on its parsed
        structure; the body itself when it is not JSON or nothing in it changed."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        if not isinstance(data, (dict, list, str)):
            return body
        before = (state.masked, len(kept))
        masked = self._mask(data, found, kept, state, depth)
        if (state.masked, len(kept)) == before:
            return body
        try:
            return orjson.dumps(masked).decode()
        except orjson.JSONEncodeError:   # deeper than orjson writes: the text pass only
            del kept[before[1]:]
            return body

    def _mask(self, data: Any, found: list[str], kept: list[str], state: _State, depth: int) -> Any:
        """Iterative (no recursion limit to hit: orjson reads 1024 levels)."""
        root = [data]
        stack: list[tuple[Any, Any, tuple[str, ...] | None]] = [(root, 0, ())]
        while stack:
            parent, index, path = stack.pop()
            value = parent[index]
            if isinstance(value, dict):
                copy = dict(value)
                parent[index] = copy
                for k in list(copy):
                    sub = path + (k,) if path is not None and depth == 0 else None
                    if sub is not None and sub in self.verbatim and isinstance(copy[k], str):
                        kept.append(copy[k])
                        copy[k] = _PLACEHOLDER.format(len(kept) - 1)
                    elif self.is_secret_key(k) and copy[k] is not None and copy[k] != REDACTED:
                        _leaves(copy[k], found)
                        copy[k] = REDACTED
                        state.masked = True
                    else:
                        stack.append((copy, k, sub))
            elif isinstance(value, list):
                copy = list(value)
                parent[index] = copy
                stack.extend((copy, i, None) for i in range(len(copy)))
            elif isinstance(value, str) and depth < _MAX_NESTED and value.lstrip()[:1] in ("{", "[", '"'):
                inner_state = _State()
                inner = self._structured(value, found, [], inner_state, depth + 1)
                if inner_state.masked:
                    parent[index] = inner
                    state.masked = True
        return root[0]

    # ---- text ---------------------------------------------------------------------------------
    def _text_pass(self, text: str, found: list[str]) -> str:
        _find_shapes(text, found)   # before the pairs: `Authorization: Basic x` loses "Basic" to them
        out: list[str] = []
        pos = 0
        for m in self._pair_re.finditer(text):
            start = m.end()
            if start < pos:
                continue
            line_start = m.start() == 0 or text[m.start() - 1] in "\r\n"
            end, value = _value_extent(text, start, header=line_start and m.group("sep") == ":"
                                       and not m.group("open"))
            if not value or value.startswith((REDACTED, "\ue000")) or value.strip("\\\"'") == REDACTED \
                    or value in _NOT_SECRETS or m.group("key") in NOT_SECRET_KEYS:
                continue
            _leaf_tokens(value, found)
            out.append(text[pos:start])
            out.append(_replacement(text, start))
            pos = end
        out.append(text[pos:])
        text = "".join(out)
        if _PERCENT.search(text):
            decoded = text
            for _ in range(3):
                if not _PERCENT.search(decoded):
                    break
                decoded = unquote_plus(decoded)
                self._text_pass_found(decoded, found)
        return text

    def _text_pass_found(self, decoded: str, found: list[str]) -> None:
        """The values the text pass would mask in `decoded`, added to `found`."""
        pos = 0
        for m in self._pair_re.finditer(decoded):
            if m.end() < pos:   # inside a value already taken whole: linear, however nested
                continue
            line_start = m.start() == 0 or decoded[m.start() - 1] in "\r\n"
            pos, value = _value_extent(decoded, m.end(), header=line_start and m.group("sep") == ":")
            if value and not value.startswith(REDACTED) and value not in _NOT_SECRETS:
                _leaf_tokens(value, found)
        _find_shapes(decoded, found)


_QUOTE = re.compile(r"\\*[\"']")


def _run(text: str, j: int) -> int:
    """How many backslashes stand right before text[j]."""
    k = j
    while k > 0 and text[k - 1] == "\\":
        k -= 1
    return j - k


def _replacement(text: str, start: int) -> str:
    """REDACTED in place of the value at `start`, inside the value's own quotes."""
    m = _QUOTE.match(text, start)
    return f"{m.group()}{REDACTED}{m.group()}" if m else REDACTED


_CLOSE = {"[": "]", "{": "}", "(": ")"}
_UNQUOTED_END = re.compile(r"[\s\"'\\,;&}\])]")


def _value_extent(text: str, start: int, header: bool) -> tuple[int, str]:
    """(end, value) of the value starting at `start`: a quoted string to its closing quote, a
    bracketed value to its matching bracket, a header line to its end, else a word. A value cut
    off by truncation runs to the end of the text."""
    if start >= len(text):
        return start, ""
    quoted = _QUOTE.match(text, start)
    if quoted:
        q, i = quoted.group(), quoted.end()
        while True:
            j = text.find(q[-1], i)
            if j < 0:
                return len(text), text[quoted.end():]
            # the closing quote has as many backslashes as the opening one (escaped deeper: inside)
            slashes = _run(text, j)
            if slashes == len(q) - 1:
                return j + 1, text[quoted.end():j - slashes]
            i = j + 1
    if text[start] in _CLOSE:
        return _bracket_end(text, start)
    if header:
        end = len(text)
        for stop in ("\r", "\n"):
            k = text.find(stop, start)
            if k >= 0:
                end = min(end, k)
        return end, text[start:end]
    m = _UNQUOTED_END.search(text, start)
    end = m.start() if m else len(text)
    return end, text[start:end]


def _bracket_end(text: str, start: int) -> tuple[int, str]:
    depth = 0
    quote_char: str | None = None
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if quote_char:
            if c == quote_char:
                quote_char = None
        elif c in "\"'":
            quote_char = c
        elif c in "[{(":
            depth += 1
        elif c in "]})":
            depth -= 1
            if depth == 0:
                return i + 1, text[start:i + 1]
        i += 1
    return n, text[start:]


_TOKEN = re.compile(r"[^\s\"'\\,:;=\[\]{}()]+")


def _leaf_tokens(value: str, found: list[str]) -> None:
    found.append(value.strip("\\\"' "))
    if value[:1] in _CLOSE or " " in value:
        found.extend(_TOKEN.findall(value))


def _leaves(value: Any, found: list[str]) -> None:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif v is not None and not isinstance(v, bool):
            found.append(str(v))


def _find_shapes(text: str, found: list[str]) -> None:
    found.extend(SECRET_SHAPES.findall(text))
    found.extend(m.group("value") for m in _CREDENTIAL.finditer(text))
    if _AWS_KEY_ID.search(text):
        found.extend(_AWS_SECRET.findall(text))


def _forms(value: str) -> set[str]:
    escaped = orjson.dumps(value).decode()[1:-1]
    return {value, escaped, escaped.replace("\\", "\\\\"), quote(value, safe=""), quote_plus(value),
            quote(quote(value, safe=""), safe="")}


_MAX_ELSEWHERE = 4096   # a longer value (a whole bracketed body) is looked for by its tokens only


def _mask_values(text: str, found: list[str]) -> str:
    values = {f for v in found if _MIN_SECRET_LEN <= len(v) <= _MAX_ELSEWHERE and v not in _NOT_SECRETS
              and v != REDACTED and "\ue000" not in v for f in _forms(v) if len(f) >= _MIN_SECRET_LEN}
    longest_first = sorted(values, key=len, reverse=True)   # a value is masked whole before any inside it
    if len(values) <= 64:
        for value in longest_first:
            if value in text:
                text = text.replace(value, REDACTED)
        return text
    # Many values (a body full of secrets): one scan. Candidates are looked up by their first 4, 8
    # or 16 characters (the longest their length allows), so values sharing a prefix (sk_live_...)
    # do not pile up in one bucket.
    buckets: dict[int, dict[str, list[str]]] = {16: {}, 8: {}, 4: {}}
    for value in longest_first:
        width = next(w for w in buckets if len(value) >= w)
        buckets[width].setdefault(value[:width], []).append(value)
    out: list[str] = []
    i = last = 0
    end = len(text) - _MIN_SECRET_LEN
    while i <= end:
        hit = None
        for width, bucket in buckets.items():
            for value in bucket.get(text[i:i + width], ()):
                if text.startswith(value, i) and (hit is None or len(value) > len(hit)):
                    hit = value
                    break
        if hit is None:
            i += 1
            continue
        out.append(text[last:i])
        out.append(REDACTED)
        i = last = i + len(hit)
    out.append(text[last:])
    return "".join(out)


DEFAULT_RULES = RedactionRules()
