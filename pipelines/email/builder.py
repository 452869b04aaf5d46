"""Message builder: subject, text and HTML bodies from templates, then raw MIME bytes.

HTML CSS is inlined with css-inline, and where possible once per kind rather than once
per message: the kind's HTML is rendered with opaque markers in place of context values
that are only printed (or only tested for truth), inlined once, cached, and each message
then substitutes its escaped values for the markers. A variable used any other way
(filters, comparisons, arithmetic) is passed for real and becomes part of the cache key,
so a cached skeleton is always what a direct render would have produced.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr
from typing import Any

import css_inline
import jinja2
from jinja2 import meta, nodes
from markupsafe import escape

from pipelines.email.catalogue import KindSpec, catalogue
from pipelines.email.request import BadRequest, EmailRequest, Recipient, has_control
from resources.templates import DEFAULT_TEMPLATES_DIR, build_environment

SITE_NAME = "Mailroom"
SITE_URL = "https://mailroom.test"
_MSGID_NAMESPACE = uuid.UUID("6f1c7d4e-3b0a-4c55-9a51-1b6d0c2f9e10")
_LINE_BREAKS = "\r\n\x0b\x0c\x85\u2028\u2029"
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"
_MARKER_RE = re.compile(f"{_MARK_OPEN}(\\d+){_MARK_CLOSE}")
_UNSAFE_NODES = (nodes.For, nodes.Macro, nodes.CallBlock, nodes.Include, nodes.Import, nodes.FromImport,
                 nodes.Assign, nodes.AssignBlock, nodes.With, nodes.Scope)


class HeaderInjection(BadRequest):
    """A line break in a value that would land in a header."""


@dataclass(frozen=True)
class BuiltEmail:
    sender: str
    recipient: str
    subject: str
    text: str
    html: str | None
    message_id: str
    raw: bytes


def one_line(text: str) -> str:
    return " ".join(text.split())


def _has_break(value: Any) -> bool:
    return isinstance(value, str) and any(c in value for c in _LINE_BREAKS)


def message_id_for(request_id: str, to_address: str, domain: str) -> str:
    """Stable per (request, recipient): a resend after a crash carries the same Message-ID."""
    digest = hashlib.sha256(f"{_MSGID_NAMESPACE}\0{request_id}\0{to_address}".encode()).hexdigest()[:32]
    return f"{digest}@{domain}"


def _encode_body(text: str, fallback: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, CRLF body). ASCII with short lines goes as it is (7bit);
    anything else as quoted-printable (text) or base64 (HTML, whose inlined lines run long)."""
    body = text.replace("\r\n", "\n").replace("\r", "\n")
    if not body.endswith("\n"):
        body += "\n"
    if body.isascii() and max(map(len, body.split("\n"))) <= 998:
        return "7bit", body.replace("\n", "\r\n").encode("ascii")
    data = body.encode("utf-8")
    if fallback == "base64":
        encoded = binascii.b2a_base64(data, newline=False)
        return "base64", b"\r\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76)) + b"\r\n"
    return "quoted-printable", binascii.b2a_qp(data, istext=True).replace(b"\n", b"\r\n")


def _part(content_type: str, text: str, fallback: str) -> bytes:
    cte, body = _encode_body(text, fallback)
    return (f'Content-Type: {content_type}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n'
            .encode("ascii") + body)


def _fold(header_value: str) -> str:
    # The email package folds encoded words with a bare LF; MIME needs CRLF.
    return header_value.replace("\r\n", "\n").replace("\n", "\r\n")


def _header_text(value: str) -> str:
    if value.isascii():
        return value
    return _fold(Header(value, "utf-8").encode())


class _DateCache:
    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def now(self) -> str:
        sec = int(time.time())
        if sec != self._second:
            self._value, self._second = formatdate(sec, usegmt=True), sec
        return self._value


@dataclass
class _HtmlPlan:
    template: jinja2.Template
    markable: frozenset[str]   # variables only printed or tested for truth
    cacheable: bool


def _template_chain(env: jinja2.Environment, name: str) -> list[nodes.Template]:
    trees = []
    while name:
        source = env.loader.get_source(env, name)[0]
        tree = env.parse(source)
        trees.append(tree)
        ext = next(tree.find_all(nodes.Extends), None)
        name = ext.template.value if ext is not None and isinstance(ext.template, nodes.Const) else None
        if ext is not None and name is None:
            return []
    return trees


def _truth_only(expr: nodes.Node) -> bool:
    if isinstance(expr, nodes.Name):
        return True
    if isinstance(expr, nodes.Test):
        return expr.name == "defined" and isinstance(expr.node, nodes.Name) and not expr.args
    if isinstance(expr, nodes.Not):
        return _truth_only(expr.node)
    if isinstance(expr, (nodes.And, nodes.Or)):
        return _truth_only(expr.left) and _truth_only(expr.right)
    return False


def _markable_names(trees: list[nodes.Template]) -> tuple[frozenset[str], bool]:
    """Names whose every use is `{{ name }}` or a truth/defined test in an `if`."""
    every: dict[str, int] = {}
    simple: dict[str, int] = {}
    for tree in trees:
        if any(True for _ in tree.find_all(_UNSAFE_NODES)):
            return frozenset(), False
        for name in tree.find_all(nodes.Name):
            if name.ctx == "load":
                every[name.name] = every.get(name.name, 0) + 1
        for out in tree.find_all(nodes.Output):
            for child in out.nodes:
                if isinstance(child, nodes.Name):
                    simple[child.name] = simple.get(child.name, 0) + 1
        for cond in tree.find_all(nodes.If):
            if _truth_only(cond.test):
                for name in cond.test.find_all(nodes.Name):
                    simple[name.name] = simple.get(name.name, 0) + 1
                if isinstance(cond.test, nodes.Name):
                    simple[cond.test.name] = simple.get(cond.test.name, 0) + 1
    return frozenset(n for n, c in every.items() if simple.get(n, 0) == c), True


class Builder:
    def __init__(self, templates_dir: str = DEFAULT_TEMPLATES_DIR, *, kinds: dict[str, KindSpec] | None = None,
                 site_name: str = SITE_NAME, site_url: str = SITE_URL, skeleton_cache_size: int = 4096):
        self.env = build_environment(templates_dir)
        self.kinds = kinds if kinds is not None else catalogue()
        self.site_name = site_name
        self.site_url = site_url.rstrip("/")
        self._inliner = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)
        self._lock = threading.Lock()
        self._subject_vars: dict[str, frozenset[str]] = {}
        self._html_plans: dict[str, _HtmlPlan | None] = {}
        self._skeletons: OrderedDict[tuple, tuple[str, list[str]] | None] = OrderedDict()
        self._skeleton_cache_size = skeleton_cache_size
        self._dates = _DateCache()
        self._templates: dict[str, jinja2.Template] = {}
        self._senders: dict[str, tuple[str, str]] = {}
        self.stats = {"skeleton_hits": 0, "skeleton_misses": 0, "direct_inlines": 0}

    # -- validation ---------------------------------------------------------------------------
    def subject_variables(self, kind: str) -> frozenset[str]:
        found = self._subject_vars.get(kind)
        if found is None:
            source = self.env.loader.get_source(self.env, f"email/{kind}/subject.txt")[0]
            found = frozenset(meta.find_undeclared_variables(self.env.parse(source)))
            self._subject_vars[kind] = found
        return found

    def check_headers(self, request: EmailRequest) -> None:
        """Refuse a request whose header-bound values carry a line break (header injection) or
        another control character (a NUL in a header is never real)."""
        for name in sorted(self.subject_variables(request.kind)):
            value = request.context.get(name)
            if _has_break(value):
                raise HeaderInjection(f"header injection refused: line break in subject variable {name!r}")
            if isinstance(value, str) and has_control(value):
                raise HeaderInjection(f"invalid subject variable {name!r}: control character")
        for i, r in enumerate(request.recipients):
            if _has_break(r.name) or _has_break(r.username):
                raise HeaderInjection(f"header injection refused: line break in recipients/{i} name")
        if _has_break(request.sender):
            raise HeaderInjection("header injection refused: line break in sender")

    # -- rendering ----------------------------------------------------------------------------
    def context_for(self, request: EmailRequest, recipient: Recipient) -> dict[str, Any]:
        return {
            **request.context,
            "recipient_name": recipient.name or recipient.username or "",
            "recipient_email": recipient.email or "",
            "site_name": self.site_name,
            "site_url": self.site_url,
        }

    def _template(self, name: str) -> jinja2.Template:
        t = self._templates.get(name)
        if t is None:
            t = self._templates[name] = self.env.get_template(name)
        return t

    def _render(self, template: jinja2.Template, ctx: dict[str, Any]) -> str:
        # Template.render copies the environment globals (a ChainMap) into every context; a
        # shared context over one merged dict renders the same output with less work.
        context = template.new_context({**self.env.globals, **ctx}, shared=True)
        try:
            return self.env.concat(template.root_render_func(context))
        except Exception:
            return self.env.handle_exception()

    def render_subject(self, kind: str, ctx: dict[str, Any]) -> str:
        for name in self.subject_variables(kind):
            if _has_break(ctx.get(name)):
                raise HeaderInjection(f"header injection refused: line break in subject variable {name!r}")
        subject = one_line(self._render(self._template(f"email/{kind}/subject.txt"), ctx))
        return subject[:900]

    def render_text(self, kind: str, ctx: dict[str, Any]) -> str:
        return self._render(self._template(f"email/{kind}/body.txt"), ctx).strip() + "\n"

    def _html_plan(self, kind: str) -> _HtmlPlan | None:
        if kind in self._html_plans:
            return self._html_plans[kind]
        name = f"email/{kind}/body.html"
        try:
            template = self.env.get_template(name)
        except jinja2.TemplateNotFound:
            plan = None
        else:
            trees = _template_chain(self.env, name)
            markable, safe = _markable_names(trees) if trees else (frozenset(), False)
            plan = _HtmlPlan(template, markable, safe and bool(trees))
        self._html_plans[kind] = plan
        return plan

    def render_html_direct(self, kind: str, ctx: dict[str, Any]) -> str | None:
        plan = self._html_plan(kind)
        if plan is None:
            return None
        self.stats["direct_inlines"] += 1
        return self._inliner.inline(self._render(plan.template, ctx))

    def render_html(self, kind: str, ctx: dict[str, Any]) -> str | None:
        plan = self._html_plan(kind)
        if plan is None:
            return None
        if not plan.cacheable:
            return self.render_html_direct(kind, ctx)
        marked: dict[str, Any] = {}
        order: list[str] = []
        key_parts: list[tuple] = []
        for name in sorted(ctx):
            value = ctx[name]
            if name in plan.markable and value:
                marked[name] = f"{_MARK_OPEN}{len(order)}{_MARK_CLOSE}"
                order.append(name)
                key_parts.append((name, True))
            else:
                marked[name] = value
                key_parts.append((name, type(value).__name__, value))
        key = (kind, tuple(key_parts))
        with self._lock:
            entry = self._skeletons.get(key, False)
            if entry is not False:
                self._skeletons.move_to_end(key)
        if entry is False:
            self.stats["skeleton_misses"] += 1
            entry = self._make_skeleton(plan, marked, len(order))
            with self._lock:
                self._skeletons[key] = entry
                if len(self._skeletons) > self._skeleton_cache_size:
                    self._skeletons.popitem(last=False)
        else:
            self.stats["skeleton_hits"] += 1
        if entry is None:
            return self.render_html_direct(kind, ctx)
        skeleton, _ = entry
        values = [str(escape(ctx[name])) for name in order]
        return _MARKER_RE.sub(lambda m: values[int(m.group(1))], skeleton)

    def _make_skeleton(self, plan: _HtmlPlan, marked: dict[str, Any], n: int) -> tuple[str, list[str]] | None:
        try:
            rendered = self._render(plan.template, marked)
        except Exception:  # noqa: BLE001 - a marker where a real value was needed: render directly
            return None
        inlined = self._inliner.inline(rendered)
        # Every marker must survive inlining exactly as often as it was rendered.
        if sorted(_MARKER_RE.findall(rendered)) != sorted(_MARKER_RE.findall(inlined)):
            return None
        if _MARK_OPEN in _MARKER_RE.sub("", inlined) or _MARK_CLOSE in _MARKER_RE.sub("", inlined):
            return None
        return inlined, []

    # -- MIME ---------------------------------------------------------------------------------
    def from_header(self, sender: str) -> tuple[str, str]:
        """(From header, envelope address) for a sender given as an address or 'Name <address>'."""
        found = self._senders.get(sender)
        if found is None:
            name, addr = parseaddr(sender)
            found = _fold(formataddr((name or self.site_name, addr), charset="utf-8")), addr
            if len(self._senders) < 1024:
                self._senders[sender] = found
        return found

    def build(self, request: EmailRequest, recipient: Recipient, sender: str,
              subject: str | None = None) -> BuiltEmail:
        """The message; `subject` may be passed when already rendered (render_subject) for this recipient."""
        assert recipient.email, "recipients without an address are skipped before building"
        ctx = self.context_for(request, recipient)
        kind = request.kind
        if subject is None:
            subject = self.render_subject(kind, ctx)
        text = self.render_text(kind, ctx)
        html = self.render_html(kind, ctx)
        from_header, envelope_from = self.from_header(sender)
        domain = envelope_from.rpartition("@")[2] or "mailroom.local"
        msg_id = message_id_for(request.request_id, recipient.email, domain)
        to_header = _fold(formataddr((ctx["recipient_name"], recipient.email), charset="utf-8"))
        headers = [
            f"From: {from_header}",
            f"To: {to_header}",
            f"Subject: {_header_text(subject)}",
            f"Date: {self._dates.now()}",
            f"Message-ID: <{msg_id}>",
            "MIME-Version: 1.0",
            f"X-Mailroom-Kind: {kind}",
        ]
        text_part = _part("text/plain", text, "quoted-printable")
        if html is None:
            raw = ("\r\n".join(headers) + "\r\n").encode("ascii") + text_part
        else:
            boundary = f"=_mailroom_{uuid.uuid4().hex}"
            html_part = _part("text/html", html, "base64")
            head = "\r\n".join(headers + [f'Content-Type: multipart/alternative; boundary="{boundary}"']) + "\r\n\r\n"
            b = boundary.encode("ascii")
            raw = (head.encode("ascii") + b"--" + b + b"\r\n" + text_part + b"--" + b + b"\r\n" + html_part
                   + b"--" + b + b"--\r\n")
        return BuiltEmail(sender=envelope_from, recipient=recipient.email, subject=subject, text=text, html=html,
                          message_id=msg_id, raw=raw)
