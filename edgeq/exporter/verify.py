"""Check an exported ONNX model against torch: same inputs, outputs within tolerance.

Errors follow ``numpy.allclose``: an element fails when ``|onnx - torch| > atol + rtol * |torch|``.
``max_rel_error`` is measured where ``|torch| > atol`` (smaller values are judged by ``atol``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.errors import ExportError

__all__ = ["Agreement", "flatten_outputs", "torch_outputs", "ort_outputs", "compare", "grow_batch"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Agreement:
    max_abs_error: float
    max_rel_error: float
    worst_output: str  # the output with the largest tolerance violation (or error)
    within_tolerance: bool


def flatten_outputs(outputs: Any) -> list[np.ndarray]:
    """Tensors of a (nested) tuple / list / dict output, in order, as numpy arrays."""
    import torch

    if isinstance(outputs, torch.Tensor):
        return [outputs.detach().cpu().numpy()]
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (tuple, list)):
        return [array for item in outputs for array in flatten_outputs(item)]
    if outputs is None:
        return []
    raise ExportError(f"the model returned a {type(outputs).__name__}; return tensors (or tuples/dicts of them)")


def torch_outputs(model: Any, inputs: Sequence[Any]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        return flatten_outputs(model(*inputs))


def ort_outputs(path: str, feeds: dict[str, np.ndarray], threads: int = 2) -> list[np.ndarray]:
    """Run the model file on onnxruntime's CPU provider; failures become ExportError."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 4  # errors reach the user once, as edgeq's one line
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        return session.run(None, {k: v for k, v in feeds.items() if k in wanted})
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"onnxruntime could not run the exported model {path}: {first}") from None


def compare(
    got: Sequence[np.ndarray], want: Sequence[np.ndarray], names: Sequence[str], *, rtol: float, atol: float
) -> Agreement:
    """Largest absolute and relative errors of ``got`` (ONNX) against ``want`` (torch)."""
    if len(got) != len(want):
        raise ExportError(f"the ONNX model has {len(got)} outputs but torch returned {len(want)}")
    max_abs = max_rel = 0.0
    worst, worst_excess, ok = names[0] if names else "output", -np.inf, True
    for name, a, b in zip(names, got, want):
        if a.shape != b.shape:
            raise ExportError(f"output {name!r}: ONNX shape {a.shape} differs from torch's {b.shape}")
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        if a64.size == 0:
            continue
        if not (np.isfinite(a64) == np.isfinite(b64)).all():
            return Agreement(np.inf, np.inf, name, False)
        finite = np.isfinite(b64)
        diff = np.abs(a64 - b64)[finite]
        ref = np.abs(b64)[finite]
        if diff.size:
            max_abs = max(max_abs, float(diff.max()))
            big = ref > atol
            if big.any():
                max_rel = max(max_rel, float((diff[big] / ref[big]).max()))
            excess = float((diff - (atol + rtol * ref)).max())
            if excess > worst_excess:
                worst, worst_excess = name, excess
            ok = ok and excess <= 0
    return Agreement(max_abs, max_rel, worst, ok)


def grow_batch(inputs: Sequence[Any], batch: int, seed: int = 0) -> tuple[Any, ...]:
    """Inputs of batch ``batch`` from batch-1 ones: the originals, then perturbed copies."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    grown = []
    for tensor in inputs:
        copies = [tensor]
        for _ in range(batch - 1):
            if tensor.is_floating_point():
                copies.append(tensor + 0.1 * tensor.std().clamp_min(1e-3) * torch.randn(tensor.shape, generator=gen).to(tensor.dtype))
            else:
                copies.append(tensor.clone())
        grown.append(torch.cat(copies, 0))
    return tuple(grown)
