"""The dispatch() snippet in docs/email-dispatch.md runs as pasted, after `eval "$(python -m devstack env)"`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from tests.paths import REPO_ROOT

ROOT = REPO_ROOT
DOC = ROOT / "docs" / "email-dispatch.md"


def test_dispatch_snippet_runs_as_pasted_after_devstack_env(local_stack, stack_env):
    text = DOC.read_text()
    assert 'eval "$(.venv/bin/python -m devstack env)"' in text
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert "dispatch(" in snippet
    # the shell after the documented eval: exactly the stack's exports, nothing from this test process
    exports = subprocess.run([sys.executable, "-m", "devstack", "env"], cwd=ROOT, capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                                  "DEVSTACK_STATE_DIR": str(local_stack.state.state_dir)}, check=True).stdout
    script = f'{exports}\n"{sys.executable}" - <<\'PY\'\n{snippet}PY\n'
    run = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    request_id = run.stdout.strip().splitlines()[-1]
    bodies = [json.loads(m["Body"]) for m in local_stack.receive("email-requests", 1)]
    assert [(b["request_id"], b["kind"], b["remote_ip"]) for b in bodies] == [(request_id, "password-reset",
                                                                             "203.0.113.7")]
    assert bodies[0]["context"]["token"] and bodies[0]["context"]["token"] != "token"
