"""Data diagnostics: does the calibration data look like the data the model will be judged on?

    found = calibration_findings(source)                 # duplicates, near-constant samples
    shares = outside_calibrated(model, cal, names, feeds)  # per tensor: share beyond calibration
    section, notes = diagnose(search, chosen, source, unseen)  # report["auto"]["data"], notes

1. Calibration samples that are exact duplicates of another add nothing; near-constant ones
   (every input's spread under ``FLAT`` of the typical sample's) calibrate nothing but silence.
   Both are counted and the first few named.
2. On samples range calibration did not see (evaluation samples, or the held-out calibration
   samples; at most the scoring limit of them, spread by input energy), each tensor
   the answer quantizes is run in float and the share of its values beyond the min/max that
   calibration saw is measured: int8 clips those. Tensors over ``CLIPPED`` are named, worst first.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np

__all__ = ["calibration_findings", "outside_calibrated", "diagnose", "FLAT", "CLIPPED"]

logger = logging.getLogger(__name__)

FLAT = 1e-3  # a sample whose every input spreads less than this share of the median spread
CLIPPED = 1e-3  # a tensor with more than this share of values outside the calibrated range
NAMED = 5


def calibration_findings(source: Any) -> dict[str, Any]:
    """{"samples", "duplicates": [labels], "near_constant": [labels]} over one pass of ``source``."""
    seen: dict[str, str] = {}
    duplicates, spreads, labels = [], [], []
    for label, feed in source.items():
        digest = hashlib.sha1()
        spread = {}
        for name in sorted(feed):
            a = np.ascontiguousarray(feed[name])
            digest.update(name.encode())
            digest.update(str(a.shape).encode())
            digest.update(a.tobytes())
            if a.dtype.kind == "f" and a.size > 1:
                spread[name] = float(a.max() - a.min())
        key = digest.hexdigest()
        if key in seen:
            duplicates.append(label)
        seen.setdefault(key, label)
        spreads.append(spread)
        labels.append(label)
    near = []
    names = {n for s in spreads for n in s}
    typical = {n: float(np.median([s[n] for s in spreads if n in s])) for n in names}
    for label, spread in zip(labels, spreads):
        if spread and all(v <= FLAT * typical[n] for n, v in spread.items() if typical[n] > 0):
            near.append(label)
    return {"samples": len(labels), "duplicates": duplicates, "near_constant": near}


def outside_calibrated(model: Any, cal: Any, names: list[str], feeds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Per tensor of ``names`` (observed by ``cal``): the share of its values on ``feeds`` below
    the calibrated min or above the calibrated max."""
    from edgeq.calibrate.collect import ObservedModel

    names = [n for n in names if n in cal]
    inputs = {v.name for v in model.graph.inputs}
    values = [v for node in model.graph for v in node.outputs if v.name in set(names)]
    session = ObservedModel(model, values) if values else None
    outside = dict.fromkeys(names, 0)
    total = dict.fromkeys(names, 0)
    try:
        for i, feed in enumerate(feeds):
            arrays = list(zip(session.names, session.run(feed, f"scoring sample {i}"))) if session else []
            arrays += [(n, feed[n]) for n in names if n in inputs and n in feed]
            for name, array in arrays:
                obs = cal.observers[name]
                a = np.asarray(array)
                outside[name] += int(np.count_nonzero((a < obs.min) | (a > obs.max)))
                total[name] += a.size
    finally:
        if session is not None:
            session.close()
    return {n: outside[n] / total[n] for n in names if total[n]}


def _quantized(config: Any) -> list[str]:
    """The tensors a configuration's model quantizes (the inputs of its QuantizeLinear nodes)."""
    return sorted({node.inputs[0].name for node in config.result.model.graph
                   if node.op_type == "QuantizeLinear" and node.inputs[0] is not None and node.inputs[0].name})


def diagnose(search: Any, chosen: Any, source: Any, unseen: list[dict[str, np.ndarray]]) -> tuple[dict[str, Any], list[str]]:
    """The report's ``data`` section and the notes that say what to do (see the docstring)."""
    found = calibration_findings(source)
    notes = []
    n = found["samples"]
    if found["duplicates"]:
        k = len(found["duplicates"])
        notes.append(f"data: {k} of the {n} calibration samples duplicate another ({', '.join(found['duplicates'][:3])}"
                     f"{' ...' if k > 3 else ''}): they add nothing; give distinct samples")
    if found["near_constant"]:
        k = len(found["near_constant"])
        notes.append(f"data: {k} of the {n} calibration samples are near-constant ({', '.join(found['near_constant'][:3])}"
                     f"{' ...' if k > 3 else ''}): they calibrate nothing but silence; give samples like the real input")
    section: dict[str, Any] = {"calibration": {"samples": n, "duplicates": len(found["duplicates"]),
                                               "near_constant": len(found["near_constant"])}}
    probe = chosen if _quantized(chosen) else max((c for c in search.tried if _quantized(c)), key=search.key, default=None)
    if probe is not None and probe.model is not None:  # an fp32 answer: why int8 failed may be the data
        try:
            shares = outside_calibrated(probe.model, search.cal, _quantized(probe), unseen)
        except Exception as e:  # a diagnosis never fails the quantization
            logger.info("data diagnostics: activations not measured (%s)", e)
            shares = {}
        worst = sorted(((s, t) for t, s in shares.items() if s > CLIPPED), reverse=True)
        section["outside_calibrated"] = {t: round(s, 6) for s, t in worst}
        section["tensors_checked"] = len(shares)
        section["samples_checked"] = len(unseen)
        if worst:
            named = ", ".join(f"{t!r} {s:.2%}" for s, t in worst[:NAMED])
            notes.append(f"data: on {len(unseen)} samples calibration did not see, {len(worst)} quantized tensor(s) take "
                         f"values outside the range calibration saw (int8 clips them): {named}"
                         f"{' ...' if len(worst) > NAMED else ''}; calibrate on data that covers what the model will see")
    return section, notes
