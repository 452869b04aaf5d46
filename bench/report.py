"""How a benchmark reports: its results JSON and a printed table of measure, value and target."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


def print_table(rows: list[tuple[str, object, str]]) -> None:
    width = max(len(r[0]) for r in rows) + 2
    print(f"\n{'measure':<{width}}{'value':>24}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}{value!s:>24}  {target}")
