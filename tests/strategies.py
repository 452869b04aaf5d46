"""Hypothesis strategies for hostile queue bodies, shared by every parser's property tests.

    mutations_of(payload)      real payload with 1-3 changes at any path: a value replaced by an
                               arbitrary JSON value, a key removed or added. JSON objects encoded
                               inside string fields (an SNS Message, a Stripe event in a webhook
                               body) are mutated inside too, and re-encoded.
    json_values()              arbitrary JSON values: odd scalars (lone surrogates, controls, huge
                               integers, long strings) and small nested containers.
    garbage_bodies()           arbitrary text and bytes (decoded as the SQS client would hand them).
    huge_or_deep_bodies()      bodies nested thousands of levels deep, or hundreds of KiB long.
    as_body(value)             the JSON text of a value as it would sit on the queue.

The profiles "ci" (the normal suite, a few hundred examples per test) and "deep" (several
thousand) are registered in tests/conftest.py; HYPOTHESIS_PROFILE=deep selects the latter.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

Path = tuple[Any, ...]   # keys and list indexes; a "json:" marker step enters an encoded JSON string
_JSON = ("json",)

# Strings that break naive code: controls, lone surrogates, line separators, bidi, huge, empty.
_NASTY_TEXT = st.sampled_from([
    "", " ", "\x00", "a\x00b", "\n", "x\r\nBcc: evil@example.org", "\ud800", "\udfff", "a\ud83d", "\u2028",
    "\u202e", "\x7f", "\x85", "%s%n", "null", "[]", "{}", "Permanent", "Transient", "Notification",
    "1970-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-13-45T99:99:99Z",
    "not a time", "a" * 65 + "@example.org", "a@example.org, b@example.org", "999999999d", "9" * 5000 + "d",
    "https://sns.us-east-1.amazonaws.com/x.pem", "https://[::1", "x" * 10_000,
])
_ALPHABET = st.characters(exclude_categories=())   # everything, lone surrogates (Cs) included
_SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=2**63 - 2, max_value=2**70), st.integers(max_value=-(2**63) + 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(_ALPHABET, max_size=40), _NASTY_TEXT,
)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    return st.recursive(
        _SCALARS,
        lambda children: st.one_of(st.lists(children, max_size=4),
                                   st.dictionaries(st.text(_ALPHABET, max_size=12), children, max_size=4)),
        max_leaves=max_leaves)


def _decoded(value: Any) -> Any | None:
    """The object inside a string field that holds JSON (an SNS Message), else None."""
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            inner = json.loads(value)
        except ValueError:
            return None
        return inner if isinstance(inner, (dict, list)) else None
    return None


def paths(value: Any, prefix: Path = ()) -> list[Path]:
    """Every path in a payload, the root included, entering JSON-encoded strings."""
    found = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            found.extend(paths(v, prefix + (k,)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found.extend(paths(v, prefix + (i,)))
    else:
        inner = _decoded(value)
        if inner is not None:
            found.extend(paths(inner, prefix + (_JSON,)))
    return found


def _get(value: Any, path: Path) -> Any:
    for step in path:
        value = _decoded(value) if step == _JSON else value[step]
    return value


def _set(value: Any, path: Path, new: Any) -> Any:
    """A copy of `value` with the node at `path` replaced by `new` (re-encoding JSON strings)."""
    if not path:
        return new
    step, rest = path[0], path[1:]
    if step == _JSON:
        return json.dumps(_set(_decoded(value), rest, new))
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[step] = _set(value[step], rest, new)
    return copy


_REMOVE = object()


def _remove(value: Any, path: Path) -> Any:
    parent, step = path[:-1], path[-1]
    container = _get(value, parent)
    if isinstance(container, dict):
        changed = {k: v for k, v in container.items() if k != step}
    else:
        changed = [v for i, v in enumerate(container) if i != step]
    return _set(value, parent, changed)


@st.composite
def _mutate_once(draw: st.DrawFn, payload: Any) -> Any:
    where = draw(st.sampled_from(paths(payload)))
    current = _get(payload, where)
    actions = ["replace"]
    if where and where[-1] != _JSON:
        actions.append("remove")
    if isinstance(current, dict):
        actions.append("add")
    action = draw(st.sampled_from(actions))
    if action == "remove":
        return _remove(payload, where)
    if action == "add":
        key = draw(st.one_of(st.text(_ALPHABET, max_size=12), st.sampled_from(sorted(current) or ["x"])))
        return _set(payload, where, {**current, key: draw(json_values())})
    return _set(payload, where, draw(json_values()))


@st.composite
def mutations_of(draw: st.DrawFn, payload: Any, max_changes: int = 3) -> Any:
    """`payload` with 1..max_changes mutations, each at any path (see the module docstring)."""
    for _ in range(draw(st.integers(min_value=1, max_value=max_changes))):
        payload = draw(_mutate_once(payload))
    return payload


def as_body(value: Any) -> str:
    """Queue body text for a value; lone surrogates are written as JSON escapes (what a producer
    that does not check would send)."""
    return json.dumps(value)


def garbage_bodies() -> st.SearchStrategy[str | bytes]:
    return st.one_of(
        st.text(_ALPHABET, max_size=200),
        st.binary(max_size=200),
        st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape")),
        st.builds(lambda a, b: a + b, st.sampled_from(['{"Type": ', '{"request_id": ', "[", '"', "{"]),
                  st.text(_ALPHABET, max_size=50)),
    )


def huge_or_deep_bodies() -> st.SearchStrategy[str]:
    def deep(depth: int, opener: str, key: str) -> str:
        if opener == "{":
            return ('{"' + key + '": ') * depth + "1" + "}" * depth
        return "[" * depth + "]" * depth

    return st.one_of(
        st.builds(deep, st.integers(min_value=100, max_value=200_000), st.sampled_from(["[", "{"]),
                  st.sampled_from(["Type", "Message", "context", "mail", "x"])),
        st.builds(lambda n, c: json.dumps({"Type": "Notification", "Message": c * n}),
                  st.integers(min_value=100_000, max_value=400_000), st.sampled_from(["x", "\u00e9", "\U0001f600"])),
        st.builds(lambda n: json.dumps({"request_id": "r", "kind": "password-reset",
                                        "recipients": [{"email": "a@example.org", "verified": True}] * n,
                                        "context": {}}),
                  st.integers(min_value=101, max_value=20_000)),
    )
