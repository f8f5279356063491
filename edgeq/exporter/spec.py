"""Resolve what the user asked to export into a module (or program) plus example inputs.

A spec is one of:

1. a zoo name (``digits_mobilenet``): ``edgeq.zoo`` gives the module, names, axes and inputs
   (and, for a model torch cannot export, such as ``vad``'s If on the sample rate, its own graph);
2. ``package.module:factory``: a callable returning an ``nn.Module`` or ``(module, example_inputs)``;
3. a ``torch.export`` program file (``.pt2``), loaded with ``torch.export.load``;
4. an ``nn.Module`` object.

Example inputs come from the zoo, the factory, the program, ``example_inputs=``, or are built at
random from ``input_shapes`` (``{"input": (1, 3, 224, 224)}``). A spec that names nothing that
exists is a UsageError listing the zoo names; a factory that raises is an ExportError naming it.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeq.errors import EdgeqError, ExportError, UsageError

__all__ = ["ResolvedModel", "InputShape", "resolve_spec", "random_inputs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputShape:
    """A shape (and dtype) for one random example input."""

    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not self.shape or any(int(d) <= 0 for d in self.shape):
            raise UsageError(f"input shape {self.shape} must have positive dimensions, e.g. 1x3x224x224")
        if self.dtype not in ("float32", "float16", "int64", "int32", "bool"):
            raise UsageError(f"input dtype {self.dtype!r} is not supported: use float32, float16, int64, int32 or bool")


@dataclass(frozen=True)
class ResolvedModel:
    """What to export: a torch module or ExportedProgram, its inputs and default I/O metadata."""

    model: Any  # torch.nn.Module | torch.export.ExportedProgram
    example_inputs: tuple[Any, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...] | None  # None: named after the outputs torch produces
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)  # the spec's own (zoo)
    label: str = "model"
    source_path: str | None = None  # a file the spec was read from (never written over)
    onnx_builder: Callable[[], Any] | None = None  # -> onnx.ModelProto: a zoo model's own graph (control flow torch cannot export)
    metadata: dict[str, str] = field(default_factory=dict)  # written into the model (a zoo LM's tokenizer)


def _zoo_names() -> str:
    from edgeq import zoo

    return ", ".join(zoo.names())


def _unknown(spec: str, why: str) -> UsageError:
    return UsageError(
        f"cannot export {spec!r}: {why}; give a zoo name ({_zoo_names()}), "
        "'package.module:factory', or a torch.export .pt2 file"
    )


def random_inputs(shapes: Mapping[str, InputShape | Sequence[int]], seed: int = 0) -> tuple[Any, ...]:
    """Seeded random tensors: normal floats, integers in {0, 1} (valid ids and masks alike)."""
    import torch

    rng = np.random.default_rng(seed)
    tensors = []
    for _name, spec in shapes.items():
        spec = spec if isinstance(spec, InputShape) else InputShape(tuple(int(d) for d in spec))
        if spec.dtype.startswith("float"):
            array = rng.standard_normal(spec.shape).astype(spec.dtype)
        elif spec.dtype == "bool":
            array = rng.integers(0, 2, spec.shape).astype(bool)
        else:
            array = rng.integers(0, 2, spec.shape).astype(spec.dtype)
        tensors.append(torch.from_numpy(array))
    return tuple(tensors)


def _as_tuple(inputs: Any) -> tuple[Any, ...]:
    import torch

    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    if isinstance(inputs, Mapping):
        return tuple(inputs.values())
    return tuple(inputs)


def _forward_names(module: Any, count: int) -> tuple[str, ...]:
    """Names of forward's first ``count`` parameters (``input`` for a single one)."""
    if count == 1:
        return ("input",)
    try:
        params = [
            p.name
            for p in inspect.signature(module.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    if len(params) >= count:
        return tuple(params[:count])
    return tuple(f"input_{i}" for i in range(count))


def _from_zoo(name: str) -> ResolvedModel:
    from edgeq import zoo

    spec = zoo.get(name)
    try:
        module = spec.build()
    except EdgeqError:
        raise
    except Exception as e:
        raise ExportError(f"building zoo model {name!r} failed ({type(e).__name__}: {e})") from e
    return ResolvedModel(
        model=module,
        example_inputs=spec.example_inputs(),
        input_names=spec.input_names,
        output_names=spec.output_names,
        dynamic_axes={k: dict(v) for k, v in spec.dynamic_axes.items()},
        label=name,
        onnx_builder=spec.onnx_model if spec.onnx_builder is not None else None,
        metadata=dict(spec.metadata),
    )


def _from_factory(spec: str) -> tuple[Any, tuple[Any, ...] | None]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise _unknown(spec, "a factory spec needs the form 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise _unknown(spec, f"no module named {e.name!r}") from None
        raise ExportError(f"importing {module_name!r} for {spec!r} failed: {e}") from e
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise _unknown(spec, f"module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise _unknown(spec, f"{attr!r} in {module_name!r} is not callable")
    try:
        made = target()
    except Exception as e:
        raise ExportError(f"factory {spec!r} raised {type(e).__name__}: {e}") from e
    if isinstance(made, tuple) and len(made) == 2:
        return made[0], _as_tuple(made[1])
    return made, None


def _from_program(path: str) -> tuple[Any, tuple[Any, ...] | None]:
    import torch

    try:
        program = torch.export.load(path)
    except Exception as e:
        raise UsageError(f"{path} is not a torch.export program ({type(e).__name__}: {e}); save one with torch.export.save") from None
    example = None
    if program.example_inputs is not None:
        args, kwargs = program.example_inputs
        example = tuple(args) + tuple(kwargs.values())
    return program, example


def resolve_spec(
    spec: Any,
    *,
    input_shapes: Mapping[str, InputShape | Sequence[int]] | None = None,
    example_inputs: Any = None,
) -> ResolvedModel:
    """Turn ``spec`` into a :class:`ResolvedModel`; see the module docstring for the forms."""
    import torch

    shapes = dict(input_shapes or {})
    if isinstance(spec, str):
        if not spec.strip():
            raise _unknown(spec, "the spec is empty")
        if spec.endswith(".pt2") or os.path.sep in spec or os.path.exists(spec):
            if not os.path.isfile(spec):
                raise _unknown(spec, f"file {spec} does not exist")
            model, found = _from_program(spec)
            label, source = os.path.splitext(os.path.basename(spec))[0], spec
        elif ":" in spec:
            model, found = _from_factory(spec)
            label, source = spec.split(":")[-1], None
        else:
            from edgeq import zoo

            if spec not in zoo.names():
                raise _unknown(spec, "it is not a zoo model, a factory or a file")
            if shapes or example_inputs is not None:
                logger.info("zoo model %s brings its own example inputs; --input-shape ignored", spec)
            return _from_zoo(spec)
    else:
        model, found, label, source = spec, None, type(spec).__name__, None

    if not isinstance(model, (torch.nn.Module, torch.export.ExportedProgram)):
        raise ExportError(f"{spec!r} gave a {type(model).__name__}, not a torch.nn.Module: return the model (and optionally its example inputs)")
    if isinstance(model, torch.nn.Module):
        model = model.eval()
    if example_inputs is not None:
        inputs = _as_tuple(example_inputs)
    elif shapes:
        inputs = random_inputs(shapes)
    elif found is not None:
        inputs = found
    else:
        raise UsageError(
            f"{spec!r} comes with no example inputs: give --input-shape NAME=1x3x224x224 "
            "(repeatable, one per input) or return (model, example_inputs) from the factory"
        )
    if shapes and len(shapes) == len(inputs):
        names = tuple(shapes)
    else:
        forward = model.module() if isinstance(model, torch.export.ExportedProgram) else model
        names = _forward_names(forward, len(inputs))
    return ResolvedModel(model=model, example_inputs=inputs, input_names=names, output_names=None,
                         label=label, source_path=source)
