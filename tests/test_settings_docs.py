"""The docs' environment values are the running stack's: the README's table (local column) and the
`NAME=value` pairs of docs/operations.md equal what `python -m devstack env` prints."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

from devstack.env import as_documented, documented_defaults
from devstack.state import REPO_ROOT
from pipelines.settings import SETTINGS, markdown_table

README = REPO_ROOT / "README.md"
OPERATIONS = REPO_ROOT / "docs" / "operations.md"


def readme_local_column() -> dict[str, str]:
    rows = {}
    for line in README.read_text().splitlines():
        m = re.match(r"^\| `([A-Z0-9_]+)` \| .* \| (`[^`]*`|\(empty\)) \| [^|]+ \|$", line)
        if m:
            rows[m.group(1)] = "" if m.group(2) == "(empty)" else m.group(2).strip("`")
    return rows


def operations_exports() -> dict[str, str]:
    text = OPERATIONS.read_text()
    start = text.index("**What `make dev` exports**")
    paragraph = text[start:text.index("\n\n", start)]
    return dict(re.findall(r"`([A-Z][A-Z0-9_]+)=([^`<]*)`", paragraph))


def devstack_env(state_dir: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTACK_") and k != "EMAIL_TRANSPORT"}
    out = subprocess.run([sys.executable, "-m", "devstack", "env"], cwd=REPO_ROOT, capture_output=True, text=True,
                         env={**environ, "DEVSTACK_STATE_DIR": state_dir}, timeout=60, check=True).stdout
    env = {}
    for line in out.splitlines():
        [(name, value)] = [tuple(shlex.split(line.removeprefix("export "))[0].split("=", 1))]
        env[name] = value
    return env


def test_readme_table_is_the_generated_one():
    readme = README.read_text()
    assert markdown_table(documented_defaults()) in readme, "regenerate it: python -m pipelines.settings"


def test_every_documented_local_value_is_what_devstack_env_prints(local_stack):
    state = local_stack.state
    printed = as_documented(devstack_env(state.state_dir), state)
    readme = readme_local_column()
    assert set(readme) == {s.name for s in SETTINGS}
    assert {name: printed[name] for name in readme} == readme
    pairs = operations_exports()
    assert {"EMAIL_TRANSPORT", "SMTP_PORT", "STRIPE_API_BASE", "STRIPE_EVENTBRIDGE_SOURCES"} <= set(pairs)
    assert {name: printed[name] for name in pairs} == pairs
