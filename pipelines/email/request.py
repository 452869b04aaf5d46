"""Parse and validate email requests (JSON Schema + catalogue checks).

A request that fails here is quarantined with `BadRequest.reason`. Reasons name the
field or variable, never a context value, so no sensitive value reaches the quarantine
reason, logs or metadata.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from pipelines.email.catalogue import KindSpec, catalogue, parse_window

SCHEMA_PATH = Path(__file__).resolve().parent / "email_request.schema.json"

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
ADDRESS_RE = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*$")


class BadRequest(ValueError):
    """The request can never be sent as it is; `reason` is safe to store."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Recipient:
    email: str | None
    verified: bool
    user_id: str | None = None
    name: str | None = None
    username: str | None = None
    acting_user: bool = False


@dataclass(frozen=True)
class EmailRequest:
    request_id: str
    kind: str
    recipients: tuple[Recipient, ...]
    context: dict[str, Any] = field(hash=False)
    sender: str | None = None
    repeat_window: timedelta | None = None
    repeat_window_overridden: bool = False
    remote_ip: str | None = None

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "request_id": self.request_id,
            "kind": self.kind,
            "recipients": [{k: v for k, v in r.__dict__.items() if v is not None} for r in self.recipients],
            "context": self.context,
        }
        if self.sender:
            body["sender"] = self.sender
        if self.repeat_window_overridden:
            body["repeat_window"] = f"{int(self.repeat_window.total_seconds()) if self.repeat_window else 0}s"
        if self.remote_ip:
            body["remote_ip"] = self.remote_ip
        return json.dumps(body, separators=(",", ":"))


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def is_valid_address(address: str) -> bool:
    return len(address) <= 320 and ADDRESS_RE.match(address) is not None


def _has_line_break(text: str) -> bool:
    return any(c in text for c in "\r\n\x0b\x0c\x85\u2028\u2029")


def _schema_reason(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in (error.instance or {})]
        return f"missing field {', '.join(missing)} at {where}"
    if error.validator == "additionalProperties":
        return f"unexpected field at {where}"
    return f"invalid {where}: fails {error.validator}"


_TOP_KEYS = frozenset({"request_id", "kind", "recipients", "context", "sender", "repeat_window", "remote_ip"})
_TOP_REQUIRED = frozenset({"request_id", "kind", "recipients", "context"})
_RECIPIENT_KEYS = frozenset({"email", "verified", "user_id", "name", "username", "acting_user"})
_KIND_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_NO_SPACE_RE = re.compile(r"\S+")
_WINDOW_RE = re.compile(r"[0-9]+\s*[smhdSMHD]")
_SCALARS = (str, int, float, bool, type(None))


def _opt_str(value: Any, limit: int) -> bool:
    return value is None or (type(value) is str and len(value) <= limit)


def _fast_valid(d: dict) -> bool:
    """A strict, fast check of the schema's rules. True only for requests the schema accepts;
    anything else is handed to jsonschema, which has the last word and names the error."""
    if not (_TOP_REQUIRED <= d.keys() <= _TOP_KEYS):
        return False
    rid, kind, recipients, context = d["request_id"], d["kind"], d["recipients"], d["context"]
    if not (type(rid) is str and len(rid) <= 200 and _NO_SPACE_RE.fullmatch(rid)):
        return False
    if not (type(kind) is str and _KIND_RE.fullmatch(kind)):
        return False
    if not (type(recipients) is list and 1 <= len(recipients) <= 100):
        return False
    for r in recipients:
        if not (type(r) is dict and "email" in r and "verified" in r and r.keys() <= _RECIPIENT_KEYS):
            return False
        if not (_opt_str(r["email"], 320) and type(r["verified"]) is bool and _opt_str(r.get("name"), 200)
                and _opt_str(r.get("username"), 200) and type(r.get("acting_user", False)) is bool
                and (r.get("user_id") is None or type(r.get("user_id")) in (str, int))):
            return False
    if not (type(context) is dict and all(type(v) in _SCALARS for v in context.values())):
        return False
    window = d.get("repeat_window")
    return (_opt_str(d.get("sender"), 320) and _opt_str(d.get("remote_ip"), 64)
            and (window is None or (type(window) is str and _WINDOW_RE.fullmatch(window) is not None)))


def parse_request(body: str | bytes | dict, kinds: dict[str, KindSpec] | None = None) -> EmailRequest:
    kinds = kinds if kinds is not None else catalogue()
    if isinstance(body, dict):
        data = body
    else:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"invalid JSON: {type(exc).__name__} at position {getattr(exc, 'pos', '?')}") from None
    if not isinstance(data, dict):
        raise BadRequest("invalid request: not a JSON object")
    if not _fast_valid(data):
        error = jsonschema.exceptions.best_match(_validator().iter_errors(data))
        if error is not None:
            raise BadRequest(_schema_reason(error))

    spec = kinds.get(data["kind"])
    if spec is None:
        raise BadRequest(f"unknown kind {data['kind']!r}")
    context = data["context"]
    for name in spec.required:
        if name not in context or context[name] is None:
            raise BadRequest(f"missing context variable {name!r} for kind {spec.kind}")
    # Variables the kind does not declare are dropped: templates cannot see them anyway.
    context = {k: v for k, v in context.items() if v is not None and k in spec.variables}

    recipients = []
    for i, r in enumerate(data["recipients"]):
        email = (r.get("email") or "").strip() or None
        if email is not None and not is_valid_address(email):
            raise BadRequest(f"malformed address in recipients/{i}")
        for key in ("name", "username"):
            if r.get(key) and _has_line_break(r[key]):
                raise BadRequest(f"header injection refused: line break in recipients/{i}/{key}")
        uid = r.get("user_id")
        recipients.append(Recipient(email=email, verified=bool(r["verified"]),
                                    user_id=None if uid is None else str(uid), name=r.get("name") or None,
                                    username=r.get("username") or None, acting_user=bool(r.get("acting_user"))))

    sender = (data.get("sender") or "").strip() or None
    if sender is not None:
        if _has_line_break(sender):
            raise BadRequest("header injection refused: line break in sender")
        _, addr = parseaddr(sender)
        if not addr or not is_valid_address(addr):
            raise BadRequest("malformed address in sender")

    remote_ip = data.get("remote_ip") or None
    if remote_ip is not None:
        try:
            remote_ip = str(ipaddress.ip_address(remote_ip))
        except ValueError:
            raise BadRequest("malformed remote_ip") from None

    overridden = data.get("repeat_window") is not None
    window = parse_window(data["repeat_window"]) if overridden else spec.repeat_window
    if window is not None and window.total_seconds() <= 0:
        window = None
    return EmailRequest(
        request_id=data["request_id"], kind=spec.kind, recipients=tuple(recipients), context=context,
        sender=sender, repeat_window=window, repeat_window_overridden=overridden,
        remote_ip=remote_ip,
    )
