"""Stage 4, ``calibrate``: a range for every activation the plan quantizes, then its scale.

Ranges come from a reused table (``--ranges``) where it covers the tensor, else from the
calibration data in one streaming pass (``edgeq.calibrate.collect_ranges``); constants take
their own min/max. A subgraph that never ran on the calibration data (an If branch no sample
took) has no ranges: its int8 nodes go back to float (``passes.subgraphs.demote_unobserved``).

The inputs of MatMuls quantized at run time (per-token and per-tensor dynamic, so not roots) are
observed too where the data allow, for their per-channel max |x| (``plan.token_channels``: their
outlier channels, ``passes/outliers.py``); a reused table that lacks them costs nothing but that."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from edgeq.errors import EdgeqError, UsageError

if TYPE_CHECKING:
    import onnx_ir as ir

    from edgeq.calibrate.ranges import RangesTable
    from edgeq.config import QuantConfig
    from edgeq.stages.plan import Planned

__all__ = ["calibrate"]


def calibrate(model: ir.Model, planned: Planned, config: QuantConfig, data: Any, ranges: Any,
              progress: bool) -> tuple[RangesTable, dict[str, Any]]:
    """(ranges table, the report's ``calibration`` section); sets ``planned.plan.qparams``."""
    from edgeq.calibrate.ranges import RangesTable

    names = planned.calibrated_roots()
    tokens = _token_inputs(model, planned, config)
    if names or tokens:
        table = _ranges(model, names, config, data, ranges, progress, optional=list(tokens))
    else:  # nothing static to calibrate (e.g. every MatMul went dynamic)
        table = RangesTable({}, method=config.method)
    _assign_qparams(model, planned, table, config)
    _token_channels(planned, table, tokens)
    return table, {"method": table.method, "num_samples": table.num_samples, "tensors": len(names)}


def _token_inputs(model: ir.Model, planned: Planned, config: QuantConfig) -> dict[str, ir.Value]:
    """The inputs of the main graph's MatMul/Gemm quantized at run time (per-token, per_token.py
    (9), or per-tensor dynamic, dynamic.py (6)) by name, sorted, when outlier channels are on."""
    from edgeq.passes.plan import Role

    if not config.outlier_channels:
        return {}
    plan = planned.plan
    inputs = {n.inputs[0] for n in model.graph if n.inputs and (n in plan.per_token or (
        plan.role(n) == Role.DYNAMIC and n.op_type in ("MatMul", "Gemm") and n.domain == ""))}
    return {v.name: v for v in sorted((v for v in inputs if v is not None and v.name and v.const_value is None),
                                      key=lambda v: v.name)}


def _token_channels(planned: Planned, table: RangesTable, tokens: dict[str, ir.Value]) -> None:
    for name, value in tokens.items():
        absmax = channel_absmax(table[name].summary) if name in table else None
        if absmax is not None:
            planned.plan.token_channels[value] = absmax


def channel_absmax(summary: dict) -> np.ndarray | None:
    """Per-channel max |x| on the last axis from a range's summary: ``channel_absmax`` (auto's
    calibration), else ``channels`` (min/max) kept along the last axis; None without either."""
    if summary.get("channel_absmax") is not None:
        return np.asarray(summary["channel_absmax"], np.float32)
    channels = summary.get("channels")
    if channels and channels.get("axis") == -1:
        return np.maximum(np.abs(np.asarray(channels["min"])), np.abs(np.asarray(channels["max"]))).astype(np.float32)
    return None


def _ranges(model: ir.Model, names: list[str], config: QuantConfig, data: Any, ranges: Any,
            progress: bool, optional: list[str] = ()) -> RangesTable:
    """``optional``: collected with the rest where the table lacks them and there are data (never
    a reason to calibrate, nor an error)."""
    from edgeq.calibrate import collect_ranges
    from edgeq.calibrate.ranges import RangesTable

    table = None
    if ranges is not None:
        table = ranges if isinstance(ranges, RangesTable) else RangesTable.load(ranges)
        missing = [n for n in names if n not in table]
        if not missing:
            return table
        if data is None and not set(missing) - _subgraph_names(model):
            return table  # values of bodies the table lacks (auto calibrates the main graph): they stay float
        if data is None:
            raise UsageError(
                f"the ranges table lacks {len(missing)} tensor(s) this model needs (e.g. {missing[0]!r}): "
                "recalibrate with --calib DATA --save-ranges FILE"
            )
        names = missing + [n for n in optional if n not in table and n not in missing]
    elif data is not None:
        names = names + [n for n in optional if n not in names]
    elif not names:
        return RangesTable({}, method=config.method)
    axes = {v.name: 1 for v in _conv_outputs(model)} if config.channel_scales else {}
    axes.update({n: -1 for n in optional if n in names and n not in axes})  # a Conv output keeps its axis 1
    collected = collect_ranges(model, names, data, config, progress=progress, channel_axes=axes or None)
    if table is None:
        return collected
    return RangesTable({**dict(table), **dict(collected)}, method=collected.method,
                       num_samples=collected.num_samples, meta=collected.meta)


def _assign_qparams(model: ir.Model, planned: Planned, table: RangesTable, config: QuantConfig) -> None:
    from edgeq.graph import const_array
    from edgeq.passes.plan import qparams_from_range
    from edgeq.passes.subgraphs import demote_unobserved

    plan = planned.plan
    missing = [r for r in plan.roots() if const_array(r) is None and r.name not in table]
    if missing:
        why = {r.name: "not in the reused ranges table" for r in missing} | table.meta.get("skipped", {})
        demote_unobserved(plan, model, missing, why)  # main-graph roots: the error below
    spans: dict[ir.Value, tuple[float, float]] = {}
    for root in plan.roots():
        array = const_array(root)
        if array is not None:
            lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        elif root.name in table:
            lo, hi = table[root.name].lo, table[root.name].hi
        else:
            raise EdgeqError(f"no calibrated range for tensor {root.name!r}: calibration skipped it "
                             "(see the log); exclude its consumers with --exclude")
        spans[root] = (min(lo, 0.0), max(hi, 0.0))
    for group in plan.unions:  # share_scales.py (4): one scale for the readers of a shared bias
        group = [r for r in group if r in spans]  # (a reader demoted above has no range)
        for cluster in _clusters([spans[r] for r in group]):
            lo, hi = min(spans[group[i]][0] for i in cluster), max(spans[group[i]][1] for i in cluster)
            spans.update(dict.fromkeys((group[i] for i in cluster), (lo, hi)))
    for root, (lo, hi) in spans.items():
        plan.qparams[root] = qparams_from_range(lo, hi, config.activations, config.symmetric)
        channels = table[root.name].summary.get("channels") if root.name in table else None
        if config.channel_scales and channels:  # passes/channel_scales.py
            plan.channel_ranges[root] = (np.asarray(channels["min"], np.float64), np.asarray(channels["max"], np.float64))


def _conv_outputs(model: ir.Model) -> list[ir.Value]:
    return [n.outputs[0] for n in model.graph if n.op_type == "Conv" and n.domain in ("", "ai.onnx")]


def _clusters(spans: list[tuple[float, float]]) -> list[list[int]]:
    """Indices of ``spans`` in groups, narrowest first, each merged range at most ``MAX_WIDEN``
    times its narrowest member's (share_scales.py (4)): an unrolled LSTM's first step reads the
    input, the other 39 the tanh state."""
    from edgeq.passes.share_scales import MAX_WIDEN

    out: list[list[int]] = []
    lo = hi = width = 0.0
    for i in sorted(range(len(spans)), key=lambda k: spans[k][1] - spans[k][0]):
        a, b = spans[i]
        if out and max(hi, b) - min(lo, a) <= MAX_WIDEN * width:
            out[-1].append(i)
            lo, hi = min(lo, a), max(hi, b)
        else:
            out.append([i])
            lo, hi, width = a, b, b - a
    return [c for c in out if len(c) > 1]


def _subgraph_names(model: ir.Model) -> set[str]:
    """Names of the values defined inside If/Loop/Scan bodies."""
    return {v.name for sub in model.graph.subgraphs() for v in [*sub.inputs, *(o for n in sub for o in n.outputs)]}
