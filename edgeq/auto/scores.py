"""Auto's default guard for score maps: what a threshold keeps, estimated from margins.

    masks = score_outputs(float_model, feed)   # graph outputs holding sigmoid scores: name -> mask
    guard = ScoreGuard(masks)                   # a metric: (reference outputs, outputs) -> IoU
    iou = estimate_iou(reference, candidate, 0.5)

Detectors and segmenters end in sigmoid scores that the application thresholds: object and class
scores of YOLO-style heads, the text map of a DB detector, a voice detector's speech probability.
An SQNR target does not keep what a threshold keeps: ddddocr's YOLOX-style detector met 30 dB on
unseen captchas with the set of anchors scoring above 0.3 changed by IoU 0.942, NudeNet's class
scores by 0.825. So where auto is given no metric of the user's and no output holds class scores
(``top1.py``), outputs holding sigmoid scores must also keep the set above each of ``THRESHOLDS``
(the common defaults, 0.25 to 0.5) to an IoU of at least ``QuantConfig.min_iou`` (``--min-iou``,
0.95 by default; 0 turns the guard off).

Which outputs (``score_outputs``): a float graph output that a "final" Sigmoid reaches through
ops that only move or select elements (Reshape, Transpose, Concat, Slice, Split, Squeeze,
Unsqueeze, Flatten, Identity, Cast), or a Mul of two such scores (object x class), every use of
the Sigmoid's output leading there (a gate inside the network, SiLU or squeeze-excite, is no
score). Where a Concat mixes them with other values (YOLO heads: box coordinates beside the
scores), one run of the float model with those Sigmoids' outputs made NaN marks the score
elements: the mask. A sigmoid output written as an image (a generator's pixels) looks the same:
``--min-iou 0``.

The estimate: a score ``s`` crosses a threshold ``t`` where the quantization noise moves its logit
past ``logit(t)``. The noise that matters is the noise of the scores near the threshold: the
logit noise of a score near 0 or 1 is far larger (one output step is a wide logit step there) and
heavier-tailed than near ``t``. So each threshold takes the observed logit noise of the scores
whose logit lies within a window of ``logit(t)`` (the narrowest of ``WINDOWS`` holding ``MIN_NEAR``
of them; else the RMS over the scores between 0.01 and 0.99 as a Gaussian ``sigma``), and a score at logit margin ``m`` crosses
with probability ``p = P(|noise| > m) / 2`` (one direction of a symmetric noise), at least 1/2
where it did cross. The IoU estimate is ``(|A| - lost) / (|A| + gained)`` with ``A`` the scores
above ``t`` and ``lost``/``gained`` the sums of ``p`` inside and outside ``A``. Like the top-1
estimate, it sees close calls that did not cross on these samples and will on others. On
ddddocr_det's int8 answer (30 dB), threshold 0.3, calibration / unseen captchas: 0.951 / 0.947
crossed, 0.943 / 0.937 estimated (one Gaussian sigma for all scores: 0.930 / 0.922).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgeq.metrics import normal_tail

__all__ = ["score_outputs", "ScoreGuard", "estimate_iou", "DEFAULT_MIN_IOU", "THRESHOLDS", "WINDOWS", "MIN_NEAR"]

DEFAULT_MIN_IOU = 0.95
THRESHOLDS = (0.25, 0.3, 0.4, 0.5)
_MOVE = {"Reshape", "Transpose", "Concat", "Slice", "Split", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Cast"}
_EPS = 1e-7
WINDOWS = (0.5, 1.0, 2.0)  # logit units either side of logit(t): the scores whose noise is read
MIN_NEAR = 128  # fewer scores in the widest window: the Gaussian over all scores instead


def _leads_to_outputs(value: Any, scores: set, seen: set) -> bool:
    """Every use of ``value`` moves it on towards graph outputs (or is one)."""
    if value in seen:
        return True
    seen.add(value)
    uses = list(value.uses())
    if not uses:
        return value.is_graph_output()
    for node, _ in uses:
        if node.domain not in ("", "ai.onnx"):
            return False
        if node.op_type == "Mul":  # object x class: both factors scores
            if not all(v is not None and (v in scores or v is value) for v in node.inputs):
                return False
        elif node.op_type not in _MOVE:
            return False
        if not all(_leads_to_outputs(out, scores, seen) for out in node.outputs):
            return False
    return True


def _final_sigmoids(model: Any) -> list[Any]:
    sigmoids = [n for n in model.graph if n.op_type == "Sigmoid" and n.domain in ("", "ai.onnx")]
    outs = {n.outputs[0] for n in sigmoids}
    return [n for n in sigmoids if _leads_to_outputs(n.outputs[0], outs, set())]


def _reached(model: Any, starts: list[Any]) -> dict[str, bool]:
    """Graph outputs reached from ``starts``: name -> whether a Concat mixed in other values."""
    reached: dict[str, bool] = {}
    frontier = [(v, False) for v in starts]
    seen = set()
    while frontier:
        value, mixed = frontier.pop()
        if (value, mixed) in seen:
            continue
        seen.add((value, mixed))
        if value.is_graph_output():
            reached[value.name] = reached.get(value.name, False) or mixed
        for node, _ in value.uses():
            mix = mixed or (node.op_type == "Concat" and any(v is not None and v not in starts and v.producer() is not None
                                                              and v.producer().op_type != "Sigmoid" for v in node.inputs))
            frontier += [(out, mix) for out in node.outputs]
    return reached


def score_outputs(model: Any, feed: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray | None]:
    """Graph outputs of ``model`` (float, onnx_ir) holding sigmoid scores: name -> element mask of
    the scores (None: all of it). A mixed output needs ``feed`` (one run marks the scores); without
    it, or where the run fails, that output is left out."""
    import onnx_ir as ir

    finals = _final_sigmoids(model)
    if not finals:
        return {}
    reached = _reached(model, [n.outputs[0] for n in finals])
    found: dict[str, np.ndarray | None] = {name: None for name, mixed in reached.items() if not mixed}
    mixed = [name for name, m in reached.items() if m]
    if not mixed or feed is None:
        return found
    from edgeq.graph import copy_model
    from edgeq.report.evaluate import cpu_session
    from edgeq.runtime.memory import in_memory

    marked = copy_model(model)
    for i, node in enumerate(_final_sigmoids(marked)):
        out = node.outputs[0]
        nan = ir.Value(name=f"edgeq_score_nan_{i}", const_value=ir.tensor(np.array(np.nan, np.float32)))
        marked.graph.register_initializer(nan)
        add = ir.node("Add", [out, nan], name=f"edgeq_score_mark_{i}")
        add.outputs[0].name, add.outputs[0].shape = f"edgeq_score_marked_{i}", out.shape
        add.outputs[0].dtype = out.dtype or ir.DataType.FLOAT
        for user, index in list(out.uses()):
            if user is not add:
                user.replace_input_with(index, add.outputs[0])
        marked.graph.insert_after(node, add)
        for i, graph_out in enumerate(marked.graph.outputs):
            if graph_out is out:
                marked.graph.outputs[i] = add.outputs[0]
    try:
        session = cpu_session(in_memory(marked), 1)
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, session.run(None, dict(feed))))
    except Exception:  # noqa: BLE001 - a graph onnxruntime will not take marked: no guard on it
        return found
    for name in mixed:
        if name in values and np.isnan(values[name]).any():
            found[name] = np.isnan(values[name])
    return found


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigma(ref: np.ndarray, got: np.ndarray) -> float:
    """RMS logit noise over the scores where the logit is well defined (0.01 .. 0.99 both)."""
    for lo in (0.01, 1e-4):
        keep = (np.minimum(ref, got) >= lo) & (np.maximum(ref, got) <= 1.0 - lo)
        if keep.sum() >= 16 or lo < 0.01:
            if not keep.any():
                return 0.0
            noise = _logit(got[keep]) - _logit(ref[keep])
            return float(np.sqrt(np.mean(noise * noise)))
    return 0.0


def _near_noise(ref: np.ndarray, got: np.ndarray, threshold: float) -> np.ndarray | None:
    """The sorted |logit noise| of the scores within the narrowest of ``WINDOWS`` of the threshold's
    logit that holds ``MIN_NEAR`` of them, or None where none does."""
    distance = np.abs(_logit(ref) - _logit(np.array(threshold)))
    for window in WINDOWS:
        near = distance < window
        if near.sum() >= MIN_NEAR:
            return np.sort(np.abs(_logit(got[near]) - _logit(ref[near])))
    return None


def estimate_iou(reference: np.ndarray, candidate: np.ndarray, threshold: float, sigma: float | None = None) -> float:
    """Estimated IoU of the sets above ``threshold`` (module docstring), over all elements given;
    ``sigma``: a Gaussian logit noise of that RMS instead of the noise observed near the threshold."""
    ref = np.asarray(reference, np.float64).ravel()
    got = np.asarray(candidate, np.float64).ravel()
    if ref.shape != got.shape or not np.all(np.isfinite(got)):
        return 0.0
    above = ref > threshold
    crossed = above != (got > threshold)
    margin = np.abs(_logit(ref) - _logit(np.array(threshold)))
    noise = _near_noise(ref, got, threshold) if sigma is None else None
    if noise is not None:
        p = 0.5 * (1.0 - np.searchsorted(noise, margin, side="right") / len(noise))
    else:
        sigma = _sigma(ref, got) if sigma is None else sigma
        p = normal_tail(margin / sigma) if sigma > 0 else np.zeros(ref.shape)
    p = np.where(crossed, np.maximum(p, 0.5), p)
    lost, gained, count = float(p[above].sum()), float(p[~above].sum()), int(above.sum())
    if count == 0:
        return max(0.0, 1.0 - gained)
    return (count - lost) / (count + gained)


class ScoreGuard:
    """Auto's metric where the user gives none and sigmoid scores are output: the lowest
    ``estimate_iou`` over the score outputs and ``THRESHOLDS``."""

    label = "IoU of scores above 0.25-0.5 with fp32 (estimated from margins)"
    cap_at_goal = True  # above its goal it does not rank configurations: the SQNR does

    def __init__(self, masks: Mapping[str, np.ndarray | None]) -> None:
        self.masks = dict(masks)
        self.names = tuple(self.masks)

    def _scores(self, name: str, stacked: np.ndarray) -> np.ndarray:
        mask = self.masks[name]
        if mask is None:
            return np.asarray(stacked).ravel()
        stacked = np.asarray(stacked)
        one = mask[0] if mask.ndim and mask.shape[0] == 1 else mask  # the marked run's batch of one
        if one.size and stacked.size % one.size == 0 and stacked.ndim >= one.ndim and stacked.shape[-one.ndim:] == one.shape:
            return stacked.reshape(-1, *one.shape)[:, one].ravel()  # samples concatenated on the batch axis
        return stacked.ravel()[:0]  # another shape than the marked run: no scores read

    def __call__(self, reference: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> float:
        values = []
        for name in self.names:
            if name not in outputs or name not in reference:
                values.append(0.0)
                continue
            ref, got = self._scores(name, reference[name]), self._scores(name, outputs[name])
            if not ref.size:
                continue
            values += [estimate_iou(ref, got, t) for t in THRESHOLDS]
        return min(values, default=1.0)

    def __repr__(self) -> str:
        return f"ScoreGuard({', '.join(self.names)})"
