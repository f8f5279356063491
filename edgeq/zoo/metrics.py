"""User metrics for ``edgeq quantize --auto --metric edgeq.zoo.metrics:NAME``.

Each takes ``(reference_outputs, outputs)``: dicts of output name -> array stacked over the
evaluation samples (the fp32 model's and the candidate's), as edgeq's auto mode passes them, and
returns a score where higher is better. numpy only.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TEXT_THRESHOLD", "mask_iou", "textmap_iou", "top1_agreement"]

TEXT_THRESHOLD = 0.3  # DBNet's binarization threshold of the probability map


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _only(outputs: dict[str, np.ndarray], name: str | None) -> np.ndarray:
    if name is not None:
        return np.asarray(outputs[name])
    if len(outputs) != 1:
        raise ValueError(f"expected one output, got {sorted(outputs)}")
    return np.asarray(next(iter(outputs.values())))


def textmap_iou(reference_outputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
                threshold: float = TEXT_THRESHOLD) -> float:
    """IoU of the text map above ``threshold`` (0.3) against the fp32 model's, over all samples.

    Uses the output named ``text_map`` if present, else the only output.
    """
    name = "text_map" if "text_map" in reference_outputs else None
    return mask_iou(_only(reference_outputs, name) > threshold, _only(outputs, name) > threshold)


def top1_agreement(reference_outputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> float:
    """Fraction of samples whose arg-max class (last axis) matches the fp32 model's.

    Uses the output named ``logits`` if present, else the only output.
    """
    name = "logits" if "logits" in reference_outputs else None
    ref, got = _only(reference_outputs, name), _only(outputs, name)
    ref, got = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, got.shape[-1])
    return float(np.mean(ref.argmax(-1) == got.argmax(-1)))
