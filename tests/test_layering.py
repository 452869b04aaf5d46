"""The import rules of docs/architecture.md ("Layering"), read from the source with ast.

- `resources/` imports nothing from `pipelines/`;
- the store (`pipelines/store/`) imports only itself; the consumer kit (`pipelines/common/`) only
  itself and the store: neither knows a domain;
- between email dispatch and delivery tracking imports run one way: `pipelines/email_delivery/`
  uses `pipelines/email/ledger.py` and nothing else of `pipelines/email/`; `pipelines/email/`
  imports nothing of `pipelines/email_delivery/`.

Every import counts, also one inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports_of(path: Path, source: str | None = None) -> set[str]:
    """Every module `path` imports (`from a.b import c` counts as a.b.c when c is a module).
    `source`: the text to read instead of the file's."""
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}"))
    return found


def modules_under(folder: str) -> list[Path]:
    paths = sorted((ROOT / folder).rglob("*.py"))
    assert paths, f"no modules under {folder}"
    return paths


def _inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def offending(folder: str, allowed) -> dict[str, list[str]]:
    """Imports of the project's own packages (pipelines, resources) from `folder` that `allowed` refuses."""
    out: dict[str, list[str]] = {}
    for path in modules_under(folder):
        own = [m for m in imports_of(path) if _inside(m, "pipelines") or _inside(m, "resources")]
        bad = sorted(m for m in own if not allowed(m))
        if bad:
            out[str(path.relative_to(ROOT))] = bad
    return out


def test_resources_import_nothing_from_pipelines():
    assert offending("resources", lambda m: _inside(m, "resources")) == {}


def test_the_store_imports_only_itself():
    assert offending("pipelines/store", lambda m: m == "pipelines" or _inside(m, "pipelines.store")) == {}


def test_the_consumer_kit_imports_only_itself_and_the_store():
    allowed = ("pipelines.common", "pipelines.store", "resources")
    assert offending("pipelines/common", lambda m: m == "pipelines" or any(_inside(m, p) for p in allowed)) == {}


DOMAINS = ("pipelines.email", "pipelines.email_delivery", "pipelines.billing")


@pytest.mark.parametrize("folder", ["pipelines/store", "pipelines/common"])
def test_store_and_kit_import_no_domain_nor_the_code_location(folder):
    code_location = ("pipelines.schema", "pipelines.definitions", "pipelines.resource_defs")
    assert offending(folder, lambda m: not any(_inside(m, d) for d in DOMAINS + code_location)) == {}


def test_email_imports_nothing_of_delivery():
    assert offending("pipelines/email", lambda m: not _inside(m, "pipelines.email_delivery")) == {}


def test_delivery_uses_only_the_email_ledger():
    def allowed(m: str) -> bool:
        return not _inside(m, "pipelines.email") or m in ("pipelines.email", "pipelines.email.ledger")
    assert offending("pipelines/email_delivery", allowed) == {}


def test_the_rules_see_real_imports():
    """The walk finds what is there: delivery's tables do use the ledger, and a lazy import counts."""
    delivery = set().union(*(imports_of(p) for p in modules_under("pipelines/email_delivery")))
    assert "pipelines.email.ledger" in delivery
    assert "pipelines.schema" in imports_of(ROOT / "pipelines/billing/load_organizations.py")   # inside main()
    assert "pipelines.store.transaction" in imports_of(ROOT / "pipelines/store/store.py")


def test_relative_imports_are_resolved():
    probe = ROOT / "pipelines" / "email_delivery" / "probe.py"   # never written: its text is given
    found = imports_of(probe, "def f():\n    from ..email import outbox\n    from . import ingest\n")
    assert {"pipelines.email.outbox", "pipelines.email_delivery.ingest"} <= found


def test_the_code_location_hands_dispatch_the_relink_hook():
    """Dispatch cannot import delivery, so the re-linking of orphan events reaches it only through
    the code location: pipelines/queues.py gives it to the email-requests spec, and
    pipelines/definitions.py builds dispatch's definitions from that spec."""
    from pipelines.email_delivery.ingest import relink_orphans
    from pipelines.queues import EMAIL_REQUESTS, QUEUE_SPECS

    assert EMAIL_REQUESTS in QUEUE_SPECS
    assert EMAIL_REQUESTS.make_consumer.keywords["on_recorded"] is relink_orphans
    tree = ast.parse((ROOT / "pipelines/definitions.py").read_text())
    built = [arg.id for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and node.func.attr == "build"
             for arg in node.args if isinstance(arg, ast.Name)]
    assert built == ["EMAIL_REQUESTS"]


# One way to write and one way to read: Store.transaction() / Store.read(). Billing's remaining
# direct connections are listed for its own refactor and not held here yet.
STORE_USERS = ("pipelines/email", "pipelines/email_delivery", "pipelines/common", "pipelines/billing")
STORE_USER_FILES = ("pipelines/query.py", "pipelines/schema.py")


def _store_user_modules() -> list[Path]:
    return [p for folder in STORE_USERS for p in modules_under(folder)] + [ROOT / f for f in STORE_USER_FILES]


def _connections_outside_a_store(path: Path, source: str | None = None) -> list[int]:
    """Lines calling `<x>.connect(...)` anywhere but inside the arguments of a `Store(...)` call."""
    tree = ast.parse(path.read_text() if source is None else source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def in_store(node: ast.AST) -> bool:
        while node in parents:
            node = parents[node]
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Store":
                return True
        return False

    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == "connect" and not in_store(n)]


def test_connections_are_opened_only_by_a_store():
    found = {str(p.relative_to(ROOT)): lines for p in _store_user_modules() if (lines := _connections_outside_a_store(p))}
    assert found == {}


def test_transactions_are_opened_only_by_the_store():
    users = {str(p.relative_to(ROOT)) for p in _store_user_modules()
             if "pipelines.store.transaction" in imports_of(p)}
    assert users == set()


def test_the_connection_rule_sees_a_bare_connection():
    source = "def f(db):\n    with db.connect() as conn:\n        pass\n    return Store(lambda: db.connect())\n"
    assert _connections_outside_a_store(ROOT / "pipelines/email/probe.py", source) == [2]


def _environment_reads(path: Path) -> list[int]:
    tree = ast.parse(path.read_text())
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "os"
            and n.attr in ("environ", "getenv", "environb")]


def test_environment_variables_are_read_only_through_settings():
    """pipelines/settings.py is the one reader (`settings.value`)."""
    found = {str(p.relative_to(ROOT)): lines for p in modules_under("pipelines")
             if p.name != "settings.py" and (lines := _environment_reads(p))}
    assert found == {}
    assert _environment_reads(ROOT / "pipelines/email/dispatch.py") == []
    assert _environment_reads(ROOT / "pipelines/billing/tenant.py") == []


PROJECT_PACKAGES = ("pipelines", "resources", "devstack", "bench")


def private_imports(path: Path, source: str | None = None) -> list[str]:
    """`from <project module> import _name` in `path`: a private name taken across modules."""
    found = []
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PROJECT_PACKAGES:
            found += [f"{node.lineno}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return found


def test_no_module_imports_a_private_name_of_another():
    offenders = {str(p.relative_to(ROOT)): found
                 for folder in (*PROJECT_PACKAGES, "tests") for p in (ROOT / folder).rglob("*.py")
                 if (found := private_imports(p))}
    assert offenders == {}


def test_a_private_import_is_found():
    assert private_imports(ROOT / "x.py", "from pipelines.email.request import _hidden, visible\n") == [
        "1: pipelines.email.request._hidden"]
