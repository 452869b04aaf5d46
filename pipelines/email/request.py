"""Parse and validate email requests (JSON Schema + catalogue checks).

A request that fails here is quarantined with `BadRequest.reason`. Reasons name the
field or variable, never a context value, so no sensitive value reaches the quarantine
reason, logs or metadata.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import getaddresses, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import orjson

from pipelines.email.catalogue import KindSpec, catalogue, parse_window

SCHEMA_PATH = Path(__file__).resolve().parent / "email_request.schema.json"

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
ADDRESS_RE = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")   # used with fullmatch
MAX_LOCAL_PART = 64          # RFC 5321 4.5.3.1.1
MAX_BODY_BYTES = 256 * 1024  # the largest message SQS carries
MAX_DEPTH = 8                # a request is 3 levels deep (request, recipients, recipient)
MAX_REPEAT_WINDOW = timedelta(days=366)
# C0 and C1 controls, DEL, Unicode line/paragraph separators, and lone surrogates: never part of
# an address, an id or a header value. Surrogates cannot even be encoded for DuckDB or SMTP.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# In free text (context values) tabs and line breaks are real; NUL, other controls and lone
# surrogates are not.
_BAD_TEXT_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


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
    # sha256 of what the request asks for (kind, recipients, context): a request_id seen again
    # with another digest is a producer reusing the id for a different email.
    digest: str = field(default="", compare=False)

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
def schema_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def is_valid_address(address: str) -> bool:
    if len(address) > 320 or ADDRESS_RE.fullmatch(address) is None:
        return False
    return len(address.rsplit("@", 1)[0]) <= MAX_LOCAL_PART


def _has_line_break(text: str) -> bool:
    return any(c in text for c in "\r\n\x0b\x0c\x85\u2028\u2029")


def has_control(text: str) -> bool:
    """A control character, line break or lone surrogate: cannot be part of an id, address or header."""
    return _CONTROL_RE.search(text) is not None


def content_digest(kind: str, recipients: list | tuple, context: dict) -> str:
    canonical = orjson.dumps({"kind": kind, "recipients": recipients, "context": context},
                             option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def _check_structure(data: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH and strings that cannot be real, naming where.

    Iterative, so no input can exhaust the stack; orjson already refused lone surrogates in a
    text body, but a dict passed in directly (dispatch) has not been through it."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadRequest(f"invalid {_where(path)}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str) or _BAD_TEXT_RE.search(k):
                    raise BadRequest(f"invalid key at {_where(path)}: control character or lone surrogate")
                stack.append((v, f"{path}/{k}" if path else k, depth + 1))
        elif isinstance(value, list):
            stack.extend((v, f"{path}/{i}" if path else str(i), depth + 1) for i, v in enumerate(value))
        elif isinstance(value, str):
            if _BAD_TEXT_RE.search(value):
                raise BadRequest(f"invalid {_where(path)}: control character or lone surrogate")
        elif isinstance(value, float) and value != value:
            raise BadRequest(f"invalid {_where(path)}: not a number")


def _decode(body: str | bytes) -> Any:
    size = len(body)
    if size > MAX_BODY_BYTES // 4 and isinstance(body, str):
        size = len(body.encode("utf-8", "surrogatepass"))
    if size > MAX_BODY_BYTES:
        raise BadRequest(f"body too large: {size} bytes, over the {MAX_BODY_BYTES}-byte limit")
    try:
        # orjson refuses nesting over 1024 levels and lone surrogates instead of recursing or
        # producing strings DuckDB cannot store.
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {type(exc).__name__} at position {exc.pos}") from None


def parse_window_limited(text: str) -> timedelta:
    """The request's repeat_window, refused when it is absurd (DuckDB could not add it to now())."""
    number = re.match(r"\s*([0-9]+)", text)
    if number is None or len(number.group(1)) > 9:
        raise BadRequest("invalid repeat_window: over 366 days")
    try:
        window = parse_window(text)
    except (ValueError, OverflowError):
        raise BadRequest("invalid repeat_window: not like 15m, 2h, 1d or 3600s") from None
    if window is not None and window > MAX_REPEAT_WINDOW:
        raise BadRequest("invalid repeat_window: over 366 days")
    return window


def _where(path: str) -> str:
    return (path[:120] + "...") if len(path) > 120 else (path or "(top level)")


def _schema_reason(error: jsonschema.ValidationError) -> str:
    where = _where("/".join(str(p) for p in error.absolute_path))
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
_ID_RE = re.compile(r"[^\s\x00-\x1f\x7f-\x9f]+")
_WINDOW_RE = re.compile(r"[0-9]{1,9} *[smhdSMHD]")
_SCALARS = (str, int, float, bool, type(None))


def _opt_str(value: Any, limit: int) -> bool:
    return value is None or (type(value) is str and len(value) <= limit)


def fast_valid(d: dict) -> bool:
    """A strict, fast check of the schema's rules. True only for requests the schema accepts;
    anything else is handed to jsonschema, which has the last word and names the error."""
    if not (_TOP_REQUIRED <= d.keys() <= _TOP_KEYS):
        return False
    rid, kind, recipients, context = d["request_id"], d["kind"], d["recipients"], d["context"]
    if not (type(rid) is str and len(rid) <= 200 and _ID_RE.fullmatch(rid)):
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
    """The validated request, or BadRequest naming the field; no other exception leaves it."""
    kinds = kinds if kinds is not None else catalogue()
    data = body if isinstance(body, dict) else _decode(body)
    if not isinstance(data, dict):
        raise BadRequest("invalid request: not a JSON object")
    _check_structure(data)
    if not fast_valid(data):
        error = jsonschema.exceptions.best_match(schema_validator().iter_errors(data))
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
    if _CONTROL_RE.search(data["request_id"]):
        raise BadRequest("invalid request_id: control character")

    recipients = []
    for i, r in enumerate(data["recipients"]):
        if r.get("email") and has_control(r["email"]):
            raise BadRequest(f"malformed address in recipients/{i}: control character")
        email = (r.get("email") or "").strip() or None
        if email is not None and not is_valid_address(email):
            raise BadRequest(f"malformed address in recipients/{i}")
        for key in ("name", "username"):
            if r.get(key) and _has_line_break(r[key]):
                raise BadRequest(f"header injection refused: line break in recipients/{i}/{key}")
            if r.get(key) and has_control(r[key]):
                raise BadRequest(f"invalid recipients/{i}/{key}: control character")
        uid = r.get("user_id")
        if isinstance(uid, str) and has_control(uid):
            raise BadRequest(f"invalid recipients/{i}/user_id: control character")
        recipients.append(Recipient(email=email, verified=bool(r["verified"]),
                                    user_id=None if uid is None else str(uid), name=r.get("name") or None,
                                    username=r.get("username") or None, acting_user=bool(r.get("acting_user"))))

    sender = (data.get("sender") or "").strip() or None
    if sender is not None:
        if _has_line_break(sender):
            raise BadRequest("header injection refused: line break in sender")
        if has_control(sender):
            raise BadRequest("invalid sender: control character")
        if len(getaddresses([sender])) != 1:
            raise BadRequest("malformed address in sender: more than one address")
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
    window = parse_window_limited(data["repeat_window"]) if overridden else spec.repeat_window
    if window is not None and window.total_seconds() <= 0:
        window = None
    recipients = tuple(recipients)
    return EmailRequest(
        request_id=data["request_id"], kind=spec.kind, recipients=recipients, context=context,
        sender=sender, repeat_window=window, repeat_window_overridden=overridden,
        remote_ip=remote_ip,
        digest=content_digest(spec.kind, [r.__dict__ for r in recipients], context),
    )
