"""Lint of templates/email: every catalogue kind has templates that only use its own variables,
keep sensitive values out of subjects, render with and without optional variables, and escape HTML."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import css_inline
import jinja2
import pytest
from jinja2 import meta

from resources.templates import DEFAULT_TEMPLATES_DIR, build_environment
from tests.paths import REPO_ROOT

ROOT = REPO_ROOT
CATALOGUE = ROOT / "pipelines" / "email" / "catalogue.tsv"
EMAIL_DIR = Path(DEFAULT_TEMPLATES_DIR) / "email"
BASE_TEXT = "email/_base/body.txt"
BASE_HTML = "email/_base/body.html"
# Owners hear that someone was invited; only the invitee's own email carries the acceptance token.
NOT_SHOWN = {"organization-member-invited": frozenset({"token"})}
ALWAYS = frozenset({"recipient_name", "recipient_email", "site_name", "site_url"})
INT_VARIABLES = frozenset({"n_hours", "days", "days_remaining"})
EVIL = "<script>alert(1)</script>"


@dataclass(frozen=True)
class Kind:
    name: str
    required: frozenset[str]
    optional: frozenset[str]
    sensitive: frozenset[str]

    @property
    def allowed(self) -> frozenset[str]:
        return self.required | self.optional | ALWAYS


def _split(cell: str | None) -> frozenset[str]:
    return frozenset(v.strip() for v in (cell or "").split(",") if v.strip())


def load_catalogue() -> list[Kind]:
    lines = [line for line in CATALOGUE.read_text().splitlines() if line and not line.startswith("#")]
    return [
        Kind(row["kind"], _split(row["required"]), _split(row["optional"]), _split(row["sensitive"]))
        for row in csv.DictReader(lines, delimiter="\t")
    ]


KINDS = load_catalogue()
KIND_IDS = [k.name for k in KINDS]


@pytest.fixture(scope="module")
def env() -> jinja2.Environment:
    return build_environment(DEFAULT_TEMPLATES_DIR)


def source(env: jinja2.Environment, name: str) -> str:
    return env.loader.get_source(env, name)[0]


def referenced_variables(env: jinja2.Environment, name: str) -> set[str]:
    found = set(meta.find_undeclared_variables(env.parse(source(env, name))))
    for parent in meta.find_referenced_templates(env.parse(source(env, name))):
        assert parent is not None, f"{name}: dynamic extends/include"
        found |= referenced_variables(env, parent)
    return found


def sample_context(kind: Kind, *, with_optional: bool, value: str | None = None, **overrides) -> dict:
    names = kind.required | (kind.optional if with_optional else frozenset())
    ctx = {}
    for var in sorted(names):
        if var in INT_VARIABLES:
            ctx[var] = 6
        else:
            ctx[var] = value if value is not None else f"sample-{var}"
    ctx.update(
        recipient_name="Ada Lovelace",
        recipient_email="ada@example.org",
        site_name="Mailroom Index",
        site_url="https://index.example.org",
    )
    ctx.update(overrides)
    return ctx


def html_templates(kind: Kind) -> list[str]:
    return [f"email/{kind.name}/body.html"] if (EMAIL_DIR / kind.name / "body.html").exists() else []


def test_catalogue_is_complete():
    assert len(KINDS) == 81
    assert len(set(KIND_IDS)) == len(KIND_IDS)


def test_no_template_folder_without_a_catalogue_kind():
    folders = {p.name for p in EMAIL_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert folders == set(KIND_IDS)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_required_files_exist_and_extend_the_base(env, kind):
    folder = EMAIL_DIR / kind.name
    assert (folder / "subject.txt").is_file()
    assert (folder / "body.txt").is_file()
    text_parents = list(meta.find_referenced_templates(env.parse(source(env, f"email/{kind.name}/body.txt"))))
    assert text_parents == [BASE_TEXT]
    for name in html_templates(kind):
        assert list(meta.find_referenced_templates(env.parse(source(env, name)))) == [BASE_HTML]


def test_every_kind_has_an_html_body():
    assert [k.name for k in KINDS if not html_templates(k)] == []


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_templates_reference_only_the_kinds_variables(env, kind):
    for name in [f"email/{kind.name}/subject.txt", f"email/{kind.name}/body.txt", *html_templates(kind)]:
        unknown = referenced_variables(env, name) - kind.allowed
        assert unknown == set(), f"{name} uses variables outside the catalogue: {sorted(unknown)}"


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_subject_has_no_sensitive_variable(env, kind):
    used = referenced_variables(env, f"email/{kind.name}/subject.txt")
    assert used & kind.sensitive == set()


@pytest.mark.parametrize("kind", [k for k in KINDS if k.sensitive], ids=[k.name for k in KINDS if k.sensitive])
def test_sensitive_value_never_rendered_into_subject(env, kind):
    secret = "SECRET-VALUE-1234"
    ctx = sample_context(kind, with_optional=True, **{v: secret for v in kind.sensitive})
    assert secret not in env.get_template(f"email/{kind.name}/subject.txt").render(ctx)


@pytest.mark.parametrize("with_optional", [True, False], ids=["with-optional", "without-optional"])
@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_renders_with_sample_context(env, kind, with_optional):
    ctx = sample_context(kind, with_optional=with_optional)
    subject = env.get_template(f"email/{kind.name}/subject.txt").render(ctx)
    assert subject.strip() and "\n" not in subject.strip()
    assert len(" ".join(subject.split())) < 200
    body = env.get_template(f"email/{kind.name}/body.txt").render(ctx)
    assert body.startswith("Hi Ada Lovelace,\n\n")
    assert "https://index.example.org" in body
    assert "\n\n\n" not in body, "text body has a run of blank lines"
    for name in html_templates(kind):
        html = env.get_template(name).render(ctx)
        assert "Hi Ada Lovelace," in html and "</html>" in html


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_required_variables_are_all_used(env, kind):
    # A required variable no template shows is a sign of a copy-paste template.
    used = set()
    for name in [f"email/{kind.name}/subject.txt", f"email/{kind.name}/body.txt"]:
        used |= referenced_variables(env, name)
    assert kind.required - used == NOT_SHOWN.get(kind.name, frozenset())


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_text_body_is_not_autoescaped(env, kind):
    ctx = sample_context(kind, with_optional=True, recipient_name="Tom & Jerry")
    assert "Hi Tom & Jerry," in env.get_template(f"email/{kind.name}/body.txt").render(ctx)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_html_escapes_recipient_name_and_every_value(env, kind):
    for name in html_templates(kind):
        html = env.get_template(name).render(sample_context(kind, with_optional=True, recipient_name=EVIL))
        assert "&lt;script&gt;" in html
        assert "<script>alert" not in html
        html = env.get_template(name).render(sample_context(kind, with_optional=True, value=EVIL))
        assert "<script>alert" not in html


def test_no_template_marks_values_safe():
    offenders = [
        str(p.relative_to(EMAIL_DIR))
        for p in EMAIL_DIR.rglob("*")
        if p.is_file() and re.search(r"\|\s*safe\b|autoescape\s+false|Markup\(", p.read_text())
    ]
    assert offenders == []


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_html_inlines_with_css_inline(env, kind):
    for name in html_templates(kind):
        inlined = css_inline.inline(env.get_template(name).render(sample_context(kind, with_optional=True)))
        assert "<style" not in inlined
        assert 'class="content" style="' in inlined


def test_bodies_are_specific_to_each_kind(env):
    seen: dict[str, str] = {}
    for kind in KINDS:
        ctx = sample_context(kind, with_optional=True)
        body = env.get_template(f"email/{kind.name}/body.txt").render(ctx)
        first_paragraph = next(p for p in body.split("\n\n")[1:] if not re.fullmatch(r".+\n-+", p))
        assert first_paragraph not in seen, f"{kind.name} opens like {seen.get(first_paragraph)}"
        seen[first_paragraph] = kind.name
    subjects = {
        env.get_template(f"email/{k.name}/subject.txt").render(sample_context(k, with_optional=True)) for k in KINDS
    }
    assert len(subjects) == len(KINDS)


def test_optional_variables_change_the_billing_bodies(env):
    kinds = {k.name: k for k in KINDS}
    failed = env.get_template("email/payment-failed/body.txt")
    with_date = failed.render(sample_context(kinds["payment-failed"], with_optional=True, next_attempt_date="2026-12-01"))
    without = failed.render(sample_context(kinds["payment-failed"], with_optional=False))
    assert "try again on 2026-12-01" in with_date
    assert "2026-12-01" not in without and "No further automatic attempt" in without

    succeeded = env.get_template("email/payment-succeeded/body.html")
    url = "https://invoice.stripe.com/i/acct_1/test_x?s=ap&t=1"
    html = succeeded.render(sample_context(kinds["payment-succeeded"], with_optional=True, invoice_url=url))
    assert 'href="https://invoice.stripe.com/i/acct_1/test_x?s=ap&amp;t=1"' in html
    assert "invoice.stripe.com" not in succeeded.render(sample_context(kinds["payment-succeeded"], with_optional=False))


def test_token_links_carry_the_token(env):
    kind = next(k for k in KINDS if k.name == "password-reset")
    ctx = sample_context(kind, with_optional=True, token="IjEyMyI.aBc-_9", n_hours=1)
    body = env.get_template("email/password-reset/body.txt").render(ctx)
    assert "https://index.example.org/account/reset-password/?token=IjEyMyI.aBc-_9\n" in body
    assert "expires in 1 hour." in body
    html = env.get_template("email/password-reset/body.html").render(ctx)
    assert 'href="https://index.example.org/account/reset-password/?token=IjEyMyI.aBc-_9"' in html


def test_token_leak_wording_follows_who_revoked(env):
    kind = next(k for k in KINDS if k.name == "token-compromised-leak")
    subject = env.get_template("email/token-compromised-leak/subject.txt")
    body = env.get_template("email/token-compromised-leak/body.txt")
    admin = sample_context(kind, with_optional=True, admin_initiated=True, reason="Seen in a paste")
    leak = sample_context(kind, with_optional=True, admin_initiated="false", public_url="https://gist.example/x")
    assert "administrator revoked" in subject.render(admin)
    assert "public web page" in subject.render(leak)
    assert "Seen in a paste" in body.render(admin) and "gist.example" not in body.render(admin)
    assert "https://gist.example/x" in body.render(leak)
