"""The one rich console of the CLI: text that comes from a model or a file prints as it is.

Names, shapes (``[batch, 3, 32, 32]``), producers and paths are data, not rich markup: the
console is made with markup and emoji codes off, so a bracket or a ``:name:`` in them is never
taken as a style tag. Styles are given as ``rich.text.Text`` styles instead.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["console"]


def console(*, stderr: bool = False) -> Any:
    """A rich Console on stdout (or stderr); 160 columns when not a terminal, so tables stay
    readable when piped or captured (rich would squeeze them into 80)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(width=None if stream.isatty() else 160, stderr=stderr, markup=False, emoji=False)
