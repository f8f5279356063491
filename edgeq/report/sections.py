"""Report sections that higher layers add: the quantize report renders them without importing them.

    register_section("auto", markdown=auto_report_markdown, html=auto_html)   # in edgeq/auto/render.py

``write_report`` renders every registered section whose key the report holds (a truthy value),
in registration order: its Markdown goes after the report's own, and its HTML page, if it has
one, beside the report as ``.html``. A section is registered when the module that renders it is
imported; the module that builds a section imports its renderer, so any report holding the
section has one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Section", "register_section", "sections_in"]

Render = Callable[[Mapping[str, Any]], str]


@dataclasses.dataclass(frozen=True)
class Section:
    """How to render the report's ``key``: Markdown to append, and an HTML page (optional)."""

    key: str
    markdown: Render
    html: Render | None = None


_SECTIONS: dict[str, Section] = {}


def register_section(key: str, *, markdown: Render, html: Render | None = None) -> None:
    """Render the report's ``key`` with ``markdown`` (and ``html``); registering a key again
    replaces it (a module reload). One report has one HTML page, so one section may have one."""
    owner = next((s.key for s in _SECTIONS.values() if s.html is not None and s.key != key), None)
    assert html is None or owner is None, f"report section {owner!r} already renders the HTML page"
    _SECTIONS[key] = Section(key, markdown, html)


def sections_in(report: Mapping[str, Any]) -> list[Section]:
    """The registered sections ``report`` holds, in registration order."""
    return [s for key, s in _SECTIONS.items() if report.get(key)]
