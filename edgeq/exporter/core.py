"""``export``: PyTorch -> ONNX with the dynamo exporter, TorchScript as fallback, checked on ORT.

1. Resolve the spec (zoo name, ``pkg.mod:factory``, ``.pt2`` file or module) and its inputs.
2. Export with ``torch.onnx.export(dynamo=True)``; if that fails, cannot give the opset asked
   for, or onnxruntime cannot run the result, or it disagrees with torch, fall back to
   ``dynamo=False`` and say why in one line. A zoo model that brings its own ONNX graph (control
   flow on an input's value, which torch traces as one branch: ``vad``) uses that graph instead
   (exporter ``auto`` only; its opset is its own).
3. Save into a temporary folder beside ``out`` (weights to external data past 2 GB), run it on
   onnxruntime's CPU provider against torch on the example inputs (and on a batch of 3 when the
   batch axis is dynamic), then move it into place. Disagreement above tolerance: ExportError.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgeq.errors import EdgeqError, ExportError, UsageError
from edgeq.exporter.axes import merge_dynamic_axes
from edgeq.exporter.spec import InputShape, ResolvedModel, resolve_spec
from edgeq.exporter.verify import Agreement, compare, grow_batch, ort_outputs, torch_outputs

__all__ = ["ExportResult", "export", "DEFAULT_OPSET", "EXPORTERS"]

logger = logging.getLogger(__name__)

# torch 2.13's dynamo exporter builds opset 18 natively; other opsets go through the version
# converter, which fails on some graphs (asked for 17, it keeps 18). 18 is what works best.
DEFAULT_OPSET = 18
EXPORTERS = ("auto", "dynamo", "torchscript")
_BATCH_CHECK = 3


@dataclass(frozen=True)
class ExportResult:
    path: str
    exporter: str  # "dynamo" | "torchscript" | "zoo" (the zoo model's own graph)
    fallback_reason: str | None  # why dynamo was not used, one line
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    max_abs_error: float | None  # None when check=False
    max_rel_error: float | None
    export_seconds: float
    opset: int
    dynamic_axes: dict[str, dict[int, str]]
    size_bytes: int  # model file plus external data


def _one_line(error: BaseException, limit: int = 240) -> str:
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    line = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """Route torch's export warnings and log chatter to our debug log."""
    noisy = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnx_ir", "onnxscript")]
    levels = [lg.level for lg in noisy]
    for lg in noisy:
        lg.setLevel(logging.ERROR if not logger.isEnabledFor(logging.DEBUG) else logging.DEBUG)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            logger.debug("torch: %s", str(w.message).splitlines()[0] if str(w.message) else w.category.__name__)
    finally:
        for lg, level in zip(noisy, levels):
            lg.setLevel(level)


def _run_exporter(kind: str, resolved: ResolvedModel, names: tuple[tuple[str, ...], tuple[str, ...]], axes, opset: int, workdir: str):
    """One export attempt -> onnx_ir.Model (TorchScript's goes through a file in ``workdir``)."""
    import onnx_ir as ir
    import torch

    input_names, output_names = names
    kwargs = dict(input_names=list(input_names), output_names=list(output_names),
                  dynamic_axes=axes or None, opset_version=opset)
    if kind == "zoo":
        return ir.from_proto(resolved.onnx_builder())
    with _quiet_torch():
        if kind == "dynamo":
            program = torch.onnx.export(resolved.model, resolved.example_inputs, dynamo=True, verbose=False, **kwargs)
            return program.model
        model = resolved.model
        if isinstance(model, torch.export.ExportedProgram):
            model = model.module()
        path = os.path.join(workdir, "torchscript.onnx")
        torch.onnx.export(model, resolved.example_inputs, path, dynamo=False, **kwargs)
        return ir.load(path)


def _files(path: str) -> list[str]:
    return [p for p in (path, path + ".data") if os.path.exists(p)]


def _check(path: str, resolved: ResolvedModel, names, axes, reference, rtol: float, atol: float) -> Agreement:
    """ORT vs torch on the example inputs, plus a batch of 3 when every input's axis 0 is dynamic."""
    input_names, output_names = names
    cases = [(resolved.example_inputs, reference)]
    if all(0 in axes.get(name, {}) for name in input_names) and resolved.example_inputs[0].shape[0] == 1:
        grown = grow_batch(resolved.example_inputs, _BATCH_CHECK)
        try:
            cases.append((grown, torch_outputs(_callable(resolved.model), grown)))
        except Exception as e:  # the torch model itself only takes batch 1: nothing to compare
            logger.warning("%s: torch fails at batch %d (%s); checked at batch 1 only", resolved.label, _BATCH_CHECK, _one_line(e))
    results = []
    for inputs, want in cases:
        feeds = {name: tensor.detach().cpu().numpy() for name, tensor in zip(input_names, inputs)}
        results.append(compare(ort_outputs(path, feeds), want, output_names, rtol=rtol, atol=atol))
    failing = [r for r in results if not r.within_tolerance]
    return Agreement(
        max_abs_error=max(r.max_abs_error for r in results),
        max_rel_error=max(r.max_rel_error for r in results),
        worst_output=(failing or results)[0].worst_output,
        within_tolerance=not failing,
    )


def _program_type() -> type:
    import torch

    return torch.export.ExportedProgram


def _callable(model: Any) -> Any:
    import torch

    return model.module() if isinstance(model, torch.export.ExportedProgram) else model


def export(
    spec: Any,
    out: str | os.PathLike,
    *,
    input_shapes: Mapping[str, InputShape | Sequence[int]] | None = None,
    dynamic_batch: bool = False,
    dynamic: Mapping[str, Mapping[int, str]] | None = None,
    opset: int | None = None,
    check: bool = True,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    exporter: str = "auto",
    example_inputs: Any = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    static: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> ExportResult:
    """Export ``spec`` to the ONNX file ``out`` and check it against torch; see the module doc.

    Dynamic axes: a zoo model's own (unless ``static``), plus axis 0 of everything with
    ``dynamic_batch``, plus ``dynamic`` (``{"input_ids": {1: "sequence"}}``). ``metadata`` is
    written into the model's metadata_props beside the zoo spec's own (a tokenizer, say).
    """
    from edgeq.io import check_output_path, save_model

    if exporter not in EXPORTERS:
        raise UsageError(f"exporter {exporter!r} is unknown: choose one of {', '.join(EXPORTERS)}")
    if rtol < 0 or atol < 0:
        raise UsageError("tolerances rtol and atol must be non-negative")
    if importlib.util.find_spec("torch") is None:
        raise UsageError("exporting from PyTorch needs torch, which is not installed: pip install 'edgeq[torch]'")
    out = os.fspath(out)
    check_output_path(out, [spec] if isinstance(spec, str) and os.path.isfile(spec) else [])
    resolved = resolve_spec(spec, input_shapes=input_shapes, example_inputs=example_inputs)
    check_output_path(out, [resolved.source_path] if resolved.source_path else [])

    in_names = tuple(input_names or resolved.input_names)
    if len(in_names) != len(resolved.example_inputs):
        raise UsageError(f"{len(in_names)} input names ({', '.join(in_names)}) for {len(resolved.example_inputs)} example inputs")
    try:
        reference = torch_outputs(_callable(resolved.model), resolved.example_inputs)
    except EdgeqError:
        raise
    except Exception as e:
        shapes = ", ".join("x".join(map(str, t.shape)) for t in resolved.example_inputs)
        error = UsageError if input_shapes else ExportError
        raise error(
            f"{resolved.label!r} fails in torch on example inputs of shape {shapes} ({_one_line(e)}): "
            "check --input-shape against what the model's forward expects"
        ) from None
    out_names = tuple(output_names or resolved.output_names or
                      (("output",) if len(reference) == 1 else tuple(f"output_{i}" for i in range(len(reference)))))
    if len(out_names) != len(reference):
        raise UsageError(f"{len(out_names)} output names ({', '.join(out_names)}) for {len(reference)} outputs of the model")
    # a zoo model brings its own dynamic axes (batch, sequence); static=True drops them
    axes = {} if static else {k: dict(v) for k, v in resolved.dynamic_axes.items()}
    for name, given in merge_dynamic_axes(in_names, out_names, dynamic_batch=dynamic_batch, dynamic=dynamic).items():
        axes.setdefault(name, {}).update(given)
    if isinstance(resolved.model, _program_type()):
        _check_program_axes(resolved.model, in_names, axes)
    names = (in_names, out_names)
    requested_opset, opset = opset, DEFAULT_OPSET if opset is None else int(opset)

    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    attempts = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    if exporter == "auto" and resolved.onnx_builder is not None:
        attempts = ["zoo"]
    failures: list[str] = []
    for kind in attempts:
        workdir = tempfile.mkdtemp(prefix=".edgeq-export-", dir=folder)
        try:
            start = time.perf_counter()
            try:
                model = _run_exporter(kind, resolved, names, axes, opset, workdir)
            except EdgeqError:
                raise
            except Exception as e:
                failures.append(f"{kind} export failed: {_one_line(e)}")
                logger.info("%s: %s", resolved.label, failures[-1])
                continue
            seconds = time.perf_counter() - start
            if requested_opset is not None and _opset_of(model) != opset and kind != attempts[-1]:
                # torch converts its native opset 18 to others and keeps 18 when that fails
                failures.append(f"{kind} produced opset {_opset_of(model)}, not the requested {opset}")
                continue
            static = _static_axes(model, axes)
            if static:
                failures.append(f"{kind} kept {static} static")
                continue
            model.metadata_props.update({**resolved.metadata, **(metadata or {})})  # e.g. a language model's tokenizer
            staged = os.path.join(workdir, os.path.basename(out))
            save_model(model, staged)
            agreement = None
            if check:
                try:
                    agreement = _check(staged, resolved, names, axes, reference, rtol, atol)
                except ExportError as e:
                    failures.append(f"{kind}: {e}")
                    continue
                if not agreement.within_tolerance:
                    failures.append(
                        f"{kind} model disagrees with torch on output {agreement.worst_output!r}: max abs error "
                        f"{agreement.max_abs_error:.3g}, max rel error {agreement.max_rel_error:.3g} "
                        f"(tolerance rtol={rtol:g}, atol={atol:g})"
                    )
                    continue
            size = sum(os.path.getsize(p) for p in _files(staged))
            mode = 0o666 & ~_umask()
            for path in reversed(_files(staged)):  # external data first, then the model
                os.chmod(path, mode)  # temporary files are private; the result is a normal file
                os.replace(path, os.path.join(folder, os.path.basename(path)))
            result = ExportResult(
                path=out,
                exporter=kind,
                fallback_reason="; ".join(failures) or None,
                input_names=in_names,
                output_names=out_names,
                max_abs_error=None if agreement is None else agreement.max_abs_error,
                max_rel_error=None if agreement is None else agreement.max_rel_error,
                export_seconds=seconds,
                opset=_opset_of(model),
                dynamic_axes=axes,
                size_bytes=size,
            )
            if requested_opset is not None and opset != result.opset:
                logger.warning("%s: asked for opset %d, the %s exporter produced opset %d", resolved.label, opset, kind, result.opset)
            logger.info("exported %s with %s in %.1f s -> %s", resolved.label, kind, seconds, out)
            return result
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    raise ExportError(f"exporting {resolved.label!r} to {out} failed: " + "; ".join(failures))


def _static_axes(model: Any, axes: Mapping[str, Mapping[int, str]]) -> str:
    """'axis 0 of input' for the first requested dynamic axis the exported graph fixed, else ''."""
    for value in [*model.graph.inputs, *model.graph.outputs]:
        for axis in axes.get(value.name, {}):
            if value.shape is not None and axis < len(value.shape) and isinstance(value.shape[axis], int):
                return f"axis {axis} of {value.name!r}"
    return ""


def _check_program_axes(program: Any, input_names: Sequence[str], axes: Mapping[str, Mapping[int, str]]) -> None:
    """A torch.export program fixes its dynamic dimensions; asking for others is a usage error."""
    placeholders = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind.name == "USER_INPUT"]
    nodes = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    for name, placeholder in zip(input_names, placeholders):
        shape = getattr(nodes[placeholder].meta.get("val"), "shape", None)
        for axis in axes.get(name, {}):
            if shape is not None and axis < len(shape) and isinstance(shape[axis], int):
                raise UsageError(
                    f"axis {axis} of input {name!r} is static in the torch.export program: dynamic dimensions are "
                    "fixed when the program is made; re-export it with dynamic_shapes, or export the module from a "
                    "'package.module:factory' spec"
                )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _opset_of(model: Any) -> int:
    return int(model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0)))
