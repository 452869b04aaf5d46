"""Jinja2 environment over templates/: StrictUndefined, HTML autoescape."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import dagster as dg
import jinja2
from pydantic import Field

DEFAULT_TEMPLATES_DIR = str(Path(__file__).resolve().parent.parent / "templates")


@lru_cache(maxsize=8)
def build_environment(directory: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        keep_trailing_newline=False,
        auto_reload=False,
    )


class TemplatesResource(dg.ConfigurableResource):
    directory: str = Field(default=DEFAULT_TEMPLATES_DIR, description="Root holding email/<kind>/...")

    def environment(self) -> jinja2.Environment:
        return build_environment(self.directory)
