"""Outlier channels: the input channels of a MatMul/Gemm taken out of its int8 product and
multiplied in float (per_token.py (9), dynamic.py (6)).

A transformer's LayerNorm outputs carry a few channels 5-20x the median channel on every token
(LLM.int8(), Dettmers et al. 2022); a scale computed at run time, per row or per tensor, spends
its levels on them. With calibration data, a channel whose calibrated max |A| is above
``OUTLIER_RATIO`` times the median channel's goes float, at most K / ``OUTLIER_SHARE`` of them
(the largest). Not where a weight is shared by MatMuls of different inputs (an unrolled
recurrence: one float correction per step would be stored).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

__all__ = ["OUTLIER_RATIO", "OUTLIER_SHARE", "outlier_channels", "shared_weights", "own_weights"]

OUTLIER_RATIO = 3.0  # a channel whose calibrated max |A| is above this times the median channel's
OUTLIER_SHARE = 16  # at most K / this many channels (the largest) go float


def outlier_channels(absmax: np.ndarray) -> np.ndarray | None:
    """The channels (sorted int64 indices) whose calibrated max |A| is above ``OUTLIER_RATIO``
    times the median channel's, at most K / ``OUTLIER_SHARE`` of them, the largest; None if none."""
    absmax = np.asarray(absmax, np.float64).reshape(-1)
    if absmax.size < OUTLIER_SHARE or not np.all(np.isfinite(absmax)):
        return None
    median = float(np.median(absmax))
    order = np.argsort(-absmax, kind="stable")[: absmax.size // OUTLIER_SHARE]
    chosen = order[absmax[order] > OUTLIER_RATIO * median] if median > 0 else order[absmax[order] > 0]
    return np.sort(chosen).astype(np.int64) if chosen.size else None


def shared_weights(graph: ir.Graph) -> set[ir.Value]:
    """Weights that MatMul/Gemm nodes reading different inputs share (taken before the pass
    replaces any reader)."""
    inputs: dict[ir.Value, set[int]] = {}
    for node in graph:
        if node.op_type in ("MatMul", "Gemm") and len(node.inputs) > 1 and node.inputs[1] is not None:
            inputs.setdefault(node.inputs[1], set()).add(id(node.inputs[0]))
    return {w for w, readers in inputs.items() if len(readers) > 1}


def own_weights(x: ir.Value, shared: set[ir.Value]) -> bool:
    """No MatMul/Gemm reading ``x`` has a weight that a node reading another input reads."""
    return not any(reader.op_type in ("MatMul", "Gemm") and len(reader.inputs) > 1 and reader.inputs[1] in shared
                   for reader in x.consumers())
