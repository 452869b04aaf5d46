"""The email kind catalogue (catalogue.tsv): flags and context variables per kind."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

CATALOGUE_PATH = Path(__file__).resolve().parent / "catalogue.tsv"

# Always supplied by the builder, never by the request.
BUILDER_VARIABLES = ("recipient_name", "recipient_email", "site_name", "site_url")

_WINDOW = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_window(text: str | None) -> timedelta | None:
    """'15m', '1d', '30d', '3600s' -> timedelta; empty -> None."""
    if text is None or not str(text).strip():
        return None
    m = _WINDOW.match(str(text).strip().lower())
    if not m:
        raise ValueError(f"repeat window must look like 15m, 2h, 1d or 3600s; got {text!r}")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


@dataclass(frozen=True)
class KindSpec:
    kind: str
    allow_unverified: bool
    repeat_window: timedelta | None
    required: tuple[str, ...]
    optional: tuple[str, ...]
    sensitive: frozenset[str]

    @property
    def variables(self) -> tuple[str, ...]:
        return self.required + self.optional


def _names(cell: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (cell or "").split(",") if n.strip())


def load_catalogue(path: str | Path = CATALOGUE_PATH) -> dict[str, KindSpec]:
    lines = [ln for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln and not ln.startswith("#")]
    kinds: dict[str, KindSpec] = {}
    for row in csv.DictReader(lines, delimiter="\t"):
        spec = KindSpec(
            kind=row["kind"].strip(),
            allow_unverified=row["allow_unverified"].strip().lower() == "true",
            repeat_window=parse_window(row.get("repeat_window")),
            required=_names(row.get("required")),
            optional=_names(row.get("optional")),
            sensitive=frozenset(_names(row.get("sensitive"))),
        )
        unknown = spec.sensitive - set(spec.variables)
        if unknown:
            raise ValueError(f"{spec.kind}: sensitive variables not declared: {sorted(unknown)}")
        kinds[spec.kind] = spec
    return kinds


@lru_cache(maxsize=1)
def catalogue() -> dict[str, KindSpec]:
    return load_catalogue()


def all_sensitive_names(kinds: dict[str, KindSpec] | None = None) -> frozenset[str]:
    kinds = kinds if kinds is not None else catalogue()
    return frozenset().union(*(k.sensitive for k in kinds.values()))
