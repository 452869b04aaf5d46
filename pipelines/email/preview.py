"""Render an email kind to files, without sending: for template authors.

    python -m pipelines.email.preview password-reset [more kinds] [--out preview/]
    python -m pipelines.email.preview --all --out preview/
    python -m pipelines.email.preview verify-email --set n_hours=48 --context ctx.json

For each kind it writes <out>/<kind>.html (the HTML part as sent: CSS inlined), <kind>.txt (the text
part) and <kind>.eml (the whole message with its headers: open it in a mail client), and prints the
subject. The context is the kind's sample context: every variable the catalogue declares
(pipelines/email/catalogue.tsv), required and optional, with a plausible value (sample_context);
`--context` (a JSON object) and `--set name=value` replace values. The message goes through the
same builder a send run uses (pipelines/email/builder.py), so what is written is what would be sent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipelines.email.builder import Builder, BuiltEmail
from pipelines.email.catalogue import KindSpec, catalogue
from pipelines.email.dispatch import build_request
from pipelines.email.request import BadRequest

SAMPLE_RECIPIENT = {"email": "ada@example.org", "name": "Ada Lovelace", "username": "ada", "user_id": "u-ada",
                    "verified": True}
SENDER = "noreply@mailroom.test"
NUMBERS = {"n_hours": 6, "days": 30, "days_remaining": 7}   # variables the templates count with


def sample_value(name: str) -> Any:
    """A plausible value for a context variable, from its name."""
    if name in NUMBERS:
        return NUMBERS[name]
    if name == "token":
        return "sample-token-0123456789"
    if name.endswith(("_url", "_link")) or name == "url":
        return f"https://mailroom.test/{name.removesuffix('_url').removesuffix('_link').replace('_', '-')}"
    if "email" in name:
        return "ada@example.org" if name != "new_email_address" else "ada.new@example.org"
    if name in ("username", "user", "submitter_name", "acting_username"):
        return "ada"
    if name.endswith("_date") or name == "date":
        return "2026-12-01"
    if name.endswith("_name"):
        return f"sample-{name.removesuffix('_name').replace('_', '-')}"
    return f"sample {name.replace('_', ' ')}"


def sample_context(spec: KindSpec) -> dict[str, Any]:
    """Every variable the kind declares, required and optional, with sample_value."""
    return {name: sample_value(name) for name in spec.variables}


def render(kind: str, overrides: dict[str, Any] | None = None, builder: Builder | None = None) -> BuiltEmail:
    """The message a send run would build for `kind` with its sample context (plus overrides)."""
    kinds = catalogue()
    if kind not in kinds:
        raise BadRequest(f"unknown kind {kind!r}; the catalogue has {len(kinds)} kinds (--list names them)")
    context = {**sample_context(kinds[kind]), **(overrides or {})}
    request = build_request(kind, [SAMPLE_RECIPIENT], context, request_id=f"preview-{kind}", kinds=kinds)
    builder = builder or Builder(kinds=kinds)
    return builder.build(request, request.recipients[0], SENDER)


def write(kind: str, built: BuiltEmail, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{kind}.txt", out / f"{kind}.eml"]
    paths[0].write_text(built.text, encoding="utf-8")
    paths[1].write_bytes(built.raw)
    if built.html is not None:
        html = out / f"{kind}.html"
        html.write_text(built.html, encoding="utf-8")
        paths.insert(0, html)
    return paths


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if args.context:
        loaded = json.loads(Path(args.context).read_text())
        if not isinstance(loaded, dict):
            raise BadRequest(f"--context {args.context}: a JSON object of variable values expected")
        values.update(loaded)
    for item in args.set or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise BadRequest(f"--set {item!r}: expected name=value")
        values[name] = int(value) if value.isdigit() else value
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.email.preview", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kinds", nargs="*", help="email kinds (pipelines/email/catalogue.tsv)")
    parser.add_argument("--all", action="store_true", help="every kind in the catalogue")
    parser.add_argument("--list", action="store_true", help="print the kinds and their variables, then stop")
    parser.add_argument("--out", default="preview", help="folder for the files (default: ./preview)")
    parser.add_argument("--context", help="JSON file: an object of variable values replacing the samples")
    parser.add_argument("--set", action="append", metavar="NAME=VALUE", help="one variable's value (repeatable)")
    args = parser.parse_args(argv)
    kinds = catalogue()
    if args.list:
        for spec in kinds.values():
            print(f"{spec.kind}\trequired: {', '.join(spec.required) or '-'}\toptional: {', '.join(spec.optional) or '-'}")
        return 0
    chosen = list(kinds) if args.all else args.kinds
    if not chosen:
        parser.error("name at least one kind, or --all")
    try:
        overrides = _overrides(args)
        builder = Builder(kinds=kinds)
        out = Path(args.out)
        for kind in chosen:
            built = render(kind, overrides, builder)
            paths = write(kind, built, out)
            print(f"{kind}: {built.subject!r} -> {', '.join(str(p) for p in paths)}")
    except (BadRequest, ValueError, OSError) as exc:
        print(f"preview: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
