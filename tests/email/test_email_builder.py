"""Builder: subjects, autoescape, header injection, MIME parts, CSS inlining; every real kind renders."""

import email
import json
from email import policy
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pytest

from pipelines.email.builder import Builder, HeaderInjection, message_id_for
from bench.samples import sample_context
from pipelines.email.catalogue import catalogue
from pipelines.email.request import EmailRequest, Recipient, parse_request
from tests.fakes import sample_kinds, write_sample_templates
from resources.templates import DEFAULT_TEMPLATES_DIR

SENDER = "noreply@mailroom.test"


@pytest.fixture
def builder(tmp_path):
    write_sample_templates(tmp_path)
    return Builder(str(tmp_path), kinds=sample_kinds())


def req(kind="password-reset", context=None, recipients=None, **extra) -> EmailRequest:
    context = context if context is not None else {"n_hours": 6, "token": "tok-1234", "username": "alice"}
    recipients = recipients or [{"email": "alice@example.org", "verified": True, "name": "Alice"}]
    return parse_request(json.dumps({"request_id": "r1", "kind": kind, "recipients": recipients,
                                     "context": context, **extra}), sample_kinds())


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=policy.default)


class Events(HTMLParser):
    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.events = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.events.append(("start", tag, sorted(attrs)))

    def handle_endtag(self, tag):
        self.events.append(("end", tag))

    def handle_data(self, data):
        self.events.append(("data", data))


def test_subject_is_one_line(builder):
    r = req("text-only", {"username": "bob"})
    built = builder.build(r, r.recipients[0], SENDER)
    assert built.subject == "Hello bob on two lines"
    assert "\n" not in built.subject
    assert parsed(built.raw)["Subject"] == "Hello bob on two lines"


def test_header_injection_in_subject_value_is_refused(builder):
    r = req(context={"n_hours": 6, "token": "t-123", "username": "alice\r\nBcc: victim@example.org"})
    with pytest.raises(HeaderInjection, match="subject variable 'username'"):
        builder.check_headers(r)
    with pytest.raises(HeaderInjection):
        builder.build(r, r.recipients[0], SENDER)


def test_line_break_in_body_only_variable_is_not_a_header(builder):
    r = req("two-factor-added", {"method": "totp", "username": "a\nb"})
    builder.check_headers(r)
    assert "a\nb" in builder.build(r, r.recipients[0], SENDER).text


def test_header_injection_in_recipient_name_is_refused(builder):
    r = EmailRequest("r1", "two-factor-added", (Recipient("a@example.org", True, name="A\nBcc: x@y.z"),),
                     {"method": "totp", "username": "a"})
    with pytest.raises(HeaderInjection, match="recipients/0"):
        builder.check_headers(r)


def test_mime_parts_and_headers(builder):
    r = req(recipients=[{"email": "alice@example.org", "verified": True, "name": "Jörg <script>alert(1)</script>"}])
    built = builder.build(r, r.recipients[0], SENDER)
    m = parsed(built.raw)
    assert m.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in m.iter_parts()] == ["text/plain", "text/html"]
    assert m["From"].addresses[0].addr_spec == SENDER and m["From"].addresses[0].display_name == "Mailroom"
    assert m["To"].addresses[0].addr_spec == "alice@example.org"
    assert m["To"].addresses[0].display_name == "Jörg <script>alert(1)</script>"
    assert m["Message-ID"] == f"<{message_id_for('r1', 'alice@example.org', 'mailroom.test')}>"
    assert m["X-Mailroom-Kind"] == "password-reset"
    text, html = (p.get_content() for p in m.iter_parts())
    assert "reset-password/?token=tok-1234" in text and "Jörg <script>" in text
    assert "&lt;script&gt;alert(1)" in html and "<script>alert" not in html
    # CSS inlined and the <style> block removed
    assert "<style" not in html and 'style="background: #0066cc' in html
    assert b"\r\n" in built.raw and b"\n" not in built.raw.replace(b"\r\n", b"")


def test_text_only_kind_is_single_part(builder):
    r = req("text-only", {"username": "bob"})
    m = parsed(builder.build(r, r.recipients[0], SENDER).raw)
    assert m.get_content_type() == "text/plain" and "Plain bob" in m.get_content()


def test_sender_override_with_display_name(builder):
    r = req(sender="Billing <billing@mailroom.test>")
    m = parsed(builder.build(r, r.recipients[0], r.sender).raw)
    assert m["From"].addresses[0].display_name == "Billing"
    assert m["From"].addresses[0].addr_spec == "billing@mailroom.test"


def test_cached_css_skeleton_equals_direct_render(builder):
    cases = [
        ("password-reset", {"n_hours": 6, "token": "a&b<c>\"d'", "username": "x"}, "Émile \"q\" & <b>"),
        ("two-factor-added", {"method": "webauthn", "username": "u&1"}, ""),
        ("two-factor-added", {"method": "totp", "username": "u2", "note": "<i>n</i>"}, "N"),
        ("two-factor-added", {"method": "totp", "username": "u3", "note": ""}, "N"),
    ]
    for kind, ctx, name in cases * 2:   # second round hits the cache
        r = req(kind, ctx, [{"email": "a@example.org", "verified": True, "name": name or None}])
        full = builder.context_for(r, r.recipients[0])
        cached, direct = builder.render_html(kind, full), builder.render_html_direct(kind, full)
        assert Events(cached).events == Events(direct).events
    assert builder.stats["skeleton_hits"] >= 4


def test_skeleton_is_shared_across_messages(builder):
    for i in range(50):
        r = req("two-factor-added", {"method": "totp", "username": f"user{i}"})
        builder.build(r, r.recipients[0], SENDER)
    assert builder.stats["skeleton_misses"] == 1 and builder.stats["skeleton_hits"] == 49


# ---- the real templates (templates/email/, written in parallel) ---------------------------------

REAL = Path(DEFAULT_TEMPLATES_DIR)


@pytest.mark.parametrize("kind", sorted(catalogue()))
def test_every_kind_renders_with_sample_context(kind):
    b = Builder(str(REAL))
    spec = catalogue()[kind]
    for with_optional in (True, False):
        ctx = sample_context(spec, with_optional)
        r = EmailRequest("r-sample", kind, (Recipient("someone@example.org", True, name="Some <One>"),), ctx)
        b.check_headers(r)
        try:
            built = b.build(r, r.recipients[0], SENDER)
        except jinja2.UndefinedError as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{kind}: undefined variable: {exc}")
        assert built.subject and "\n" not in built.subject
        assert built.text.strip()
        for name in spec.sensitive & set(ctx):
            assert str(ctx[name]) not in built.subject, f"{kind}: sensitive {name} in the subject"
        m = parsed(built.raw)
        assert m["Subject"] == built.subject
        if built.html is not None:
            assert "<style" not in built.html
            assert "Some &lt;One&gt;" in built.html or "Some <One>" not in built.html
            full = b.context_for(r, r.recipients[0])
            assert Events(built.html).events == Events(b.render_html_direct(kind, full)).events
