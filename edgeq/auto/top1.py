"""Auto's default guard for classifiers: the top-1 class kept, estimated from margins.

    names = class_outputs(float_model)     # graph outputs that hold class scores
    guard = Top1Guard(names)               # a metric: (reference outputs, outputs) -> agreement
    agreement = estimate(reference, candidate)

An SQNR target does not keep a classifier's answers where its top classes are close: resnet224
(fixed-seed weights, 1000 classes) met 30 dB on its calibration samples with 9% of its unseen
top-1 classes changed; mobilenet224 delivered 31 dB unseen with 7% changed. So where auto is given
no metric of the user's, an output that holds class scores must also keep its top-1 class on at
least ``QuantConfig.min_top1`` of the rows (default 0.995; 0 turns the guard off).

Counting changed classes on 32 samples cannot show 99.5% (one change is 3%; none says little), so
each row (a sample's scores) gives the probability that the quantization noise changes its top
class: with ``e`` the row's noise and ``sigma = sqrt(2) * rms(e)`` the spread of the difference
of two classes' noise, ``p = min(1, sum_j Phi(-(r_top - r_j) / sigma))`` over the other classes
``j`` (a union bound; exact for two classes); a row whose top class did change counts at least
1/2. The estimate is ``1 - mean(p)``: it sees a close call that did not flip on these samples and
will on others (resnet224: 0.92 estimated on its calibration samples, 0.91 counted unseen).

Class scores (``class_outputs``): a float graph output of rank 2 (batch, classes) made by a
linear head (Gemm; MatMul, or an Add of a MatMul's output), or any output of Softmax/LogSoftmax
over its last axis, or of a softmax written out as ``Div(Exp(t), ReduceSum(Exp(t)))`` (Magika's
jax2tf export). An embedding read out through a Gemm looks the same: ``--min-top1 0``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgeq.metrics import normal_tail

__all__ = ["class_outputs", "default_guard", "Top1Guard", "estimate", "DEFAULT_MIN_TOP1"]

DEFAULT_MIN_TOP1 = 0.995
FLIPPED_AT_LEAST = 0.5  # a row whose top class changed counts at least this much
_LINEAR = {"Gemm", "MatMul"}


def _is_class_scores(value: Any) -> bool:
    node = value.producer()
    shape = value.shape
    if node is None or shape is None or value.dtype is None or not value.dtype.is_floating_point():
        return False
    rank = len(shape)
    last = shape[rank - 1] if rank else None
    if rank < 2 or (isinstance(last, int) and last < 2):
        return False
    if node.op_type in ("Softmax", "LogSoftmax") and node.domain in ("", "ai.onnx"):
        axis = node.attributes.get("axis")
        axis = -1 if axis is None else axis.as_int()
        return axis in (-1, rank - 1)
    if _written_softmax(node):
        return True
    if rank != 2:
        return False
    if node.op_type in _LINEAR:
        return True
    if node.op_type == "Add":
        return any(v is not None and v.producer() is not None and v.producer().op_type in _LINEAR for v in node.inputs)
    return False


_SHAPE_ONLY = {"Reshape", "Expand", "Unsqueeze", "Squeeze", "Identity", "Cast", "Flatten"}


def _written_softmax(node: Any) -> bool:
    """``Div(Exp(t), ReduceSum(Exp(t)))``, the sum maybe reshaped or broadcast on the way: a softmax
    written out (jax2tf, Keras and hand-written exports)."""
    if node.op_type != "Div" or len(node.inputs) != 2 or any(v is None for v in node.inputs):
        return False
    numerator, denominator = node.inputs
    if numerator.producer() is None or numerator.producer().op_type != "Exp":
        return False
    producer = denominator.producer()
    while producer is not None and producer.op_type in _SHAPE_ONLY and producer.inputs:
        producer = producer.inputs[0].producer() if producer.inputs[0] is not None else None
    return producer is not None and producer.op_type == "ReduceSum" and producer.inputs[0] is numerator


def class_outputs(model: Any) -> list[str]:
    """The names of ``model``'s graph outputs that hold class scores (see the module docstring)."""
    return [v.name for v in model.graph.outputs if _is_class_scores(v)]


def estimate(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Estimated share of rows (last axis: classes) whose top class ``candidate`` keeps."""
    ref = np.asarray(reference, np.float64)
    got = np.asarray(candidate, np.float64)
    if ref.shape != got.shape:
        return 0.0
    if ref.ndim == 0 or ref.shape[-1] < 2:  # nothing to rank
        return 1.0
    ref, got = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, ref.shape[-1])
    if not len(ref):
        return 1.0
    if not np.all(np.isfinite(got)):
        return 0.0
    rows = np.arange(len(ref))
    top = ref.argmax(1)
    noise = got - ref
    sigma = math.sqrt(2.0) * np.sqrt(np.mean(noise * noise, axis=1))
    margin = ref[rows, top][:, None] - ref
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sigma[:, None] > 0, margin / sigma[:, None], np.inf)
    z[rows, top] = np.inf
    p = np.minimum(1.0, normal_tail(z).sum(axis=1))
    p = np.where(got.argmax(1) != top, np.maximum(p, FLIPPED_AT_LEAST), p)
    return float(1.0 - p.mean())


def default_guard(model: Any, metric: Any, min_score: float | None, min_top1: float, min_iou: float = 0.0,
                  feed: Mapping[str, np.ndarray] | None = None) -> tuple[Any, float | None, str | None]:
    """(metric, min_score, note): the guard where the user gave no metric: the top-1 guard where
    ``model`` has class outputs, else the score guard (``scores.py``) where it outputs sigmoid
    scores (``feed``: one calibration feed, to mark scores mixed with other values)."""
    if metric is not None or min_score is not None:
        return metric, min_score, None
    names = class_outputs(model) if min_top1 > 0 else []
    if not names:
        if min_iou <= 0:
            return metric, min_score, None
        from edgeq.auto.scores import THRESHOLDS, ScoreGuard, score_outputs

        masks = score_outputs(model, feed)
        if not masks:
            return metric, min_score, None
        note = (f"{', '.join(masks)} {'holds' if len(masks) == 1 else 'hold'} sigmoid scores: the answer also keeps "
                f"the set of scores above each of {', '.join(f'{t:g}' for t in THRESHOLDS)} to an IoU of at least "
                f"{min_iou:g}, estimated from each score's margin and noise (--min-iou 0 turns this off; --metric sets "
                "your own)")
        return ScoreGuard(masks), min_iou, note
    note = (f"{', '.join(names)} {'holds' if len(names) == 1 else 'hold'} class scores: the answer also keeps the top-1 "
            f"class on at least {min_top1:g} of samples, estimated from each sample's margins and noise "
            f"(--min-top1 0 turns this off; --metric sets your own)")
    return Top1Guard(names), min_top1, note


class Top1Guard:
    """Auto's metric where the user gives none: the lowest ``estimate`` over the class outputs."""

    label = "top-1 agreement with fp32 (estimated from margins)"
    cap_at_goal = True  # above its goal it does not rank configurations: the SQNR does

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)

    def __call__(self, reference: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> float:
        return min((estimate(reference[n], outputs[n]) if n in outputs else 0.0 for n in self.names), default=1.0)

    def __repr__(self) -> str:
        return f"Top1Guard({', '.join(self.names)})"
