"""pipelines.email.preview: every kind renders with its sample context to files, nothing is sent,
and the files are what a send run would build."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser

import pytest

from pipelines.email import preview
from pipelines.email.builder import Builder
from pipelines.email.catalogue import catalogue


def test_every_kind_renders_to_html_text_and_eml(tmp_path):
    assert preview.main(["--all", "--out", str(tmp_path)]) == 0
    for kind in catalogue():
        text = (tmp_path / f"{kind}.txt").read_text()
        msg = BytesParser(policy=policy.default).parsebytes((tmp_path / f"{kind}.eml").read_bytes())
        assert msg["X-Mailroom-Kind"] == kind and msg["Message-ID"] and msg["Subject"]
        assert msg.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n").strip() == text.strip()
        html = tmp_path / f"{kind}.html"
        if html.exists():
            assert "<html" in html.read_text().lower() and "<style" not in html.read_text()  # CSS inlined


def test_the_sample_context_fills_every_declared_variable():
    spec = catalogue()["verify-email"]
    ctx = preview.sample_context(spec)
    assert set(ctx) == set(spec.variables)
    assert isinstance(ctx["n_hours"], int) and "@" in ctx["email_address"]


def test_what_is_written_is_what_the_builder_builds(tmp_path):
    built = preview.render("password-reset", {"username": "grace"})
    again = preview.render("password-reset", {"username": "grace"}, Builder())
    assert built.html == again.html and built.text == again.text and "grace" in built.subject
    assert preview.main(["password-reset", "--set", "username=grace", "--set", "n_hours=48",
                         "--out", str(tmp_path)]) == 0
    text = (tmp_path / "password-reset.txt").read_text()
    assert "grace" in text and "48 hours" in text


def test_an_unknown_kind_or_a_bad_override_fails_naming_it(tmp_path, capsys):
    assert preview.main(["no-such-kind", "--out", str(tmp_path)]) == 2
    assert "unknown kind 'no-such-kind'" in capsys.readouterr().err
    assert preview.main(["password-reset", "--set", "novalue", "--out", str(tmp_path)]) == 2
    assert "--set 'novalue': expected name=value" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name, value", [("n_hours", 6), ("token", "sample-token-0123456789"),
                                         ("public_url", "https://mailroom.test/public")])
def test_sample_values(name, value):
    assert preview.sample_value(name) == value
