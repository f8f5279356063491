"""Gram matrices ``X^T X`` of layer inputs over calibration samples: the Hessians of GPTQ
(``passes/gptq.py``), for auto's int8 GPTQ step and weight-only int4."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["gram_matrices", "ROWS"]

ROWS = 1024  # rows multiplied at once: MiniLM's FFN inputs (K = 1536) 3x faster than 128 per sample


def gram_matrices(model: Any, source: Any, names: list[str], max_samples: int | None = None) -> dict[str, np.ndarray]:
    """``X^T X`` over the calibration samples of each value in ``names`` (a MatMul/Gemm input,
    its last axis the channels): the Hessians of ``passes/gptq.py``. O(channels^2) each."""
    from edgeq.calibrate import load_data
    from edgeq.calibrate.collect import ObservedModel

    source = load_data(source, model)
    values = {v.name: v for node in model.graph for v in node.outputs if v.name in set(names)}
    feeds_only = [n for n in names if n not in values and n in {v.name for v in model.graph.inputs}]
    session = ObservedModel(model, list(values.values())) if values else None
    grams: dict[str, np.ndarray] = {}
    pending: dict[str, list[np.ndarray]] = {}
    for count, (label, feed) in enumerate(source.items()):
        if max_samples is not None and count >= max_samples:
            break
        arrays = list(zip(session.names, session.run(feed, label))) if session else []
        arrays += [(n, feed[n]) for n in feeds_only]
        for name, array in arrays:
            if not isinstance(array, np.ndarray) or array.dtype.kind != "f" or array.ndim < 1:
                continue
            x = array.reshape(-1, array.shape[-1]).astype(np.float32)
            x = x[np.all(np.isfinite(x), axis=1)]
            rows = pending.setdefault(name, [])
            if rows and rows[0].shape[1] != x.shape[1]:
                _add(grams, name, rows)
            rows.append(x)
            if sum(len(r) for r in rows) >= ROWS:
                _add(grams, name, rows)
    for name, rows in pending.items():
        _add(grams, name, rows)
    return grams


def _add(grams: dict[str, np.ndarray], name: str, rows: list[np.ndarray]) -> None:
    """``X^T X`` of the rows held for ``name`` added to its sum (float32 products of ``ROWS``
    rows at a time, summed in float64); ``rows`` emptied. A value whose channel count changed
    between samples keeps the last count's sum."""
    if not rows:
        return
    x = np.concatenate(rows) if len(rows) > 1 else rows[0]
    rows.clear()
    gram = (x.T @ x).astype(np.float64)
    grams[name] = gram if name not in grams or grams[name].shape != gram.shape else grams[name] + gram
