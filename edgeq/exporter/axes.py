"""Dynamic axes and example-input shapes as the CLI writes them.

* ``--input-shape input=1x3x224x224`` (optionally ``:int64``) -> ``{"input": InputShape(...)}``
* ``--dynamic input_ids:1=sequence`` -> ``{"input_ids": {1: "sequence"}}``
* ``--dynamic-batch`` -> axis 0 of every input and output is named ``batch``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from edgeq.errors import UsageError
from edgeq.exporter.spec import InputShape

__all__ = ["parse_input_shapes", "parse_dynamic", "merge_dynamic_axes"]

Axes = dict[str, dict[int, str]]


def parse_input_shapes(items: Iterable[str]) -> dict[str, InputShape]:
    """``["input=1x3x224x224", "ids=1x128:int64"]`` -> ordered name -> InputShape."""
    shapes: dict[str, InputShape] = {}
    for item in items:
        name, sep, rest = item.partition("=")
        dims, _, dtype = rest.partition(":")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape:
            raise UsageError(f"--input-shape {item!r}: write NAME=DIMS[:DTYPE], e.g. input=1x3x224x224 or ids=1x128:int64")
        if name in shapes:
            raise UsageError(f"--input-shape gives input {name!r} twice")
        shapes[name] = InputShape(shape, dtype or "float32")
    return shapes


def parse_dynamic(items: Iterable[str]) -> Axes:
    """``["input_ids:1=sequence", "logits:0=batch"]`` -> ``{"input_ids": {1: "sequence"}, ...}``."""
    axes: Axes = {}
    for item in items:
        target, sep, label = item.partition("=")
        name, colon, axis = target.rpartition(":")
        if not sep or not colon or not name or not label or not axis.lstrip("-").isdigit():
            raise UsageError(f"--dynamic {item!r}: write NAME:AXIS=LABEL, e.g. input_ids:1=sequence")
        axes.setdefault(name, {})[int(axis)] = label
    return axes


def merge_dynamic_axes(
    input_names: Iterable[str],
    output_names: Iterable[str],
    *,
    dynamic_batch: bool = False,
    dynamic: Mapping[str, Mapping[int, str]] | None = None,
) -> Axes:
    """The dynamic axes to export with; every name must be an input or an output."""
    inputs, outputs = list(input_names), list(output_names)
    axes: Axes = {}
    if dynamic_batch:
        for name in inputs + outputs:
            axes[name] = {0: "batch"}
    for name, given in (dynamic or {}).items():
        if name not in inputs and name not in outputs:
            raise UsageError(
                f"--dynamic names {name!r}, which is neither an input ({', '.join(inputs)}) "
                f"nor an output ({', '.join(outputs)})"
            )
        for axis, label in given.items():
            if axis < 0:
                raise UsageError(f"--dynamic {name}:{axis}: give a non-negative axis")
            axes.setdefault(name, {})[int(axis)] = str(label)
    return axes
