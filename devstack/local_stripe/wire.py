"""Stripe's wire format: form-encoded bodies with nested keys, parsed into dicts and lists.

`metadata[k]=v` -> {"metadata": {"k": "v"}}; `items[0][price]=p` -> {"items": [{"price": "p"}]};
`expand[]=a&expand[]=b` and `expand[0]=a` -> {"expand": ["a", "b"]}. Values stay strings; the
routes coerce them with the helpers below (the SDK sends booleans as "true"/"false").
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from devstack.local_stripe.errors import invalid

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def parse_form(text: str) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for raw_key, value in parse_qsl(text, keep_blank_values=True):
        m = _KEY.match(raw_key)
        if not m:
            raise invalid(f"Invalid parameter name: {raw_key}", raw_key)
        parts = [m.group(1)] + re.findall(r"\[([^\[\]]*)\]", m.group(2))
        _assign(root, parts, value, raw_key)
    return _lists(root)


def _assign(node: dict[str, Any], parts: list[str], value: str, raw_key: str) -> None:
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if part == "":  # `a[][b]`: a list of dicts; start a new element when the key repeats
            part = str(len(node))
            if str(len(node) - 1) in node and nxt not in node[str(len(node) - 1)]:
                part = str(len(node) - 1)
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise invalid(f"Conflicting values for parameter {raw_key}", raw_key)
        node = child
    last = parts[-1]
    if last == "":
        last = str(len(node))
    if isinstance(node.get(last), dict):
        raise invalid(f"Conflicting values for parameter {raw_key}", raw_key)
    node[last] = value


def _lists(node: Any) -> Any:
    """dicts whose keys are all digits become lists, in index order."""
    if not isinstance(node, dict):
        return node
    converted = {k: _lists(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


# --- coercion ---------------------------------------------------------------------------------

def as_int(params: dict[str, Any], name: str, default: int | None = None, *, required: bool = False,
           minimum: int | None = None, maximum: int | None = None) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise invalid(f"Missing required param: {name}.", name, code="parameter_missing")
        return default
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        try:
            value = int(str(raw))
        except ValueError:
            raise invalid(f"Invalid integer: {raw}", name, code="parameter_invalid_integer") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise invalid(f"Invalid {name}: must be {bounds}", name)
    return value


def as_bool(params: dict[str, Any], name: str, default: bool | None = None) -> bool | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        return raw
    if str(raw).lower() in ("true", "1"):
        return True
    if str(raw).lower() in ("false", "0"):
        return False
    raise invalid(f"Invalid boolean: {raw}", name, code="parameter_invalid_boolean")


def as_str(params: dict[str, Any], name: str, default: str | None = None, *, required: bool = False,
           choices: tuple[str, ...] | None = None) -> str | None:
    raw = params.get(name)
    if raw is None:
        if required:
            raise invalid(f"Missing required param: {name}.", name, code="parameter_missing")
        return default
    if not isinstance(raw, str):
        raise invalid(f"Invalid string: {name} must be a string", name)
    if choices is not None and raw not in choices:
        raise invalid(f"Invalid {name}: must be one of {', '.join(choices)}", name)
    return raw


def as_metadata(params: dict[str, Any], current: dict[str, str] | None = None, name: str = "metadata") -> dict[str, str]:
    """Stripe merges metadata: a key set to "" is removed; metadata="" clears everything."""
    raw = params.get(name)
    current = dict(current or {})
    if raw is None:
        return current
    if raw == "":
        return {}
    if not isinstance(raw, dict):
        raise invalid("Invalid metadata: must be a hash of keys to strings", name)
    for key, value in raw.items():
        if not isinstance(value, str):
            raise invalid(f"Invalid metadata[{key}]: must be a string", f"{name}[{key}]")
        if value == "":
            current.pop(key, None)
        else:
            current[key] = value
    if len(current) > 50:
        raise invalid("Invalid metadata: at most 50 keys", name)
    return current


def as_list(params: dict[str, Any], name: str) -> list[Any]:
    raw = params.get(name)
    if raw is None or raw == "":
        return []
    if isinstance(raw, list):
        return raw
    if isinstance(raw, dict):  # a[x]=... with non-numeric keys is not a list
        raise invalid(f"Invalid array: {name}", name)
    return [raw]
