"""The ``auto`` section of the quantize report: target, verdict, every configuration tried
(error and latency), repairs, range methods, and per layer the precision chosen and why.

Per layer, ``precision`` is one of "int8", "int8-dynamic", "int8-per-token", "int16" (int16 activations, int8
weights), "fp16" and "fp32"; ``why`` says what was measured: the layer's sensitivity rank, the
output SQNR with it int8 and on each rung of the ladder, and, where a cheaper-in-error precision
met the target in a configuration that lost on latency, both timings.
"""

from __future__ import annotations

import math
from typing import Any

import edgeq.auto.render  # noqa: F401 (registers the report's "auto" section: write_report renders it)
from edgeq.auto.placement import NOISE
from edgeq.graph import all_nodes

__all__ = ["auto_section"]


def _db(value: float) -> Any:
    return round(value, 3) if math.isfinite(value) else ("inf" if value > 0 else "-inf")


_LABEL = {"int16": "int16 activations", "fp16": "fp16", "int8-per-token": "int8 per-token dynamic"}
_ATTR = {"int16": "int16", "fp16": "fp16", "int8-per-token": "per_token"}  # the Config field of each rung


def _rank(f: dict | None) -> str:
    if not f:
        return ""
    alone = f["only_int8_sqnr_db"]
    return (f"sensitivity rank {f['rank']} of {f['of']}"
            + (f" (with only it int8 the output SQNR is {alone} dB)" if alone is not None else ""))


def _fastest_with(search: Any, name: str, precision: str) -> Any:
    """The fastest configuration tried that meets the target with ``name`` in ``precision``."""
    timed = [c for c in search.tried if name in getattr(c, _ATTR[precision]) and search.meets(c)
             and c.latency_ms is not None]
    return min(timed, key=lambda c: c.latency_ms, default=None)


def _ladder_why(search: Any, chosen: Any, name: str, precision: str, f: dict | None) -> str:
    label = _LABEL[precision]
    tried = (f or {}).get("tried_db", {})
    why = f"{label}{' (int8 weights)' if precision == 'int16' else ''} for fidelity"
    why += f": {_rank(f)}" if f else ""
    if "int8" in tried:
        why += f"; with it int8 the target fails ({tried['int8']} dB)"
    why += (f"; in {label} it holds ({tried[precision]} dB)" if precision in tried
            else f"; the most sensitive layers in {label} meet the target")
    if chosen.latency_ms is not None:
        why += (f"; this configuration measured {chosen.latency_ms:.3f} ms, the fastest meeting the target "
                f"(fp32 model {getattr(search, 'fp32_ms', float('nan')):.3f} ms)")
    return why


def _ladder_tail(search: Any, chosen: Any, name: str, f: dict) -> str:
    """What the ladder measured for a layer that stayed fp32."""
    tail, tried = "", f.get("tried_db", {})
    for precision in ("fp16", "int8-per-token", "int16"):
        if precision not in tried:
            continue
        other = _fastest_with(search, name, precision)
        if precision in tried.get("meets", []) and other is not None and chosen.latency_ms is not None:
            slower = other.latency_ms > chosen.latency_ms * (1 + NOISE)
            tail += (f"; {_LABEL[precision]} also met the target ({tried[precision]} dB) but measured "
                     + ("slower" if slower else "no faster (within timing noise; fp32 is the more faithful)")
                     + f" ({other.latency_ms:.3f} ms vs {chosen.latency_ms:.3f} ms)")
        elif precision not in tried.get("meets", []):
            tail += f"; {_LABEL[precision]} misses the target too ({tried[precision]} dB)"
    return tail


def _layers(search: Any, chosen: Any, verdict: str, fallback: dict, dropped: dict) -> list[dict[str, Any]]:
    from edgeq.auto.analysis import OUTLIER_RATIO
    from edgeq.passes.plan import Role

    cal = search.cal
    bench = search.bench
    bench.model = chosen.model
    user = set(bench.config.exclude)
    units = bench.units()
    plan, copy = bench.plan(chosen.exclude)
    nodes = {n.name: n for n in all_nodes(copy.graph)}
    float_reasons = {e["node"]: e["reason"] for e in chosen.result.report.get("float", [])}
    out = []
    for unit in units:
        entry: dict[str, Any] = {"node": unit.name, "op": unit.op, "group": unit.label}
        if verdict.startswith("fp32"):
            entry.update(precision="fp32", why=verdict)
        elif unit.name in dropped:
            entry.update(precision="fp32", why=dropped[unit.name])
        elif chosen.name == "fp16 (whole model)":
            entry.update(precision="fp16", why=(
                f"fp16 for speed: the whole model in fp16 measured {chosen.latency_ms:.3f} ms against fp32 "
                f"{getattr(search, 'fp32_ms', float('nan')):.3f} ms, the fastest configuration meeting the target "
                "(int8 Q/DQ runs float kernels on this provider)"))
        elif unit.name in chosen.int16 or unit.name in chosen.fp16 or unit.name in chosen.per_token:
            precision = ("int16" if unit.name in chosen.int16 else "fp16" if unit.name in chosen.fp16
                         else "int8-per-token")
            entry.update(precision=precision, why=_ladder_why(search, chosen, unit.name, precision,
                                                              fallback.get(unit.name)))
        elif unit.name in chosen.dynamic:  # fronts.py: back to one scale per tensor, for speed
            entry.update(precision="int8-dynamic", why=(
                "int8 weights, activations quantized at run time one scale per tensor, outlier channels in float "
                "(DynamicQuantizeMatMul, cheaper than the per-token arithmetic); the target holds with this input per "
                "tensor"))
        elif unit.name in fallback and unit.name in chosen.exclude:
            f = fallback[unit.name]
            why = f"fp32 for fidelity: {_rank(f)}; the target needs it float" + _ladder_tail(search, chosen, unit.name, f)
            node = nodes.get(unit.name)
            ratios = [(v.name, cal.outlier_ratio(v.name)) for v in ([*node.inputs[:1], *node.outputs] if node else [])
                      if v is not None and v.name in cal]
            ratios = [(t, r) for t, r in ratios if r >= OUTLIER_RATIO]
            if ratios:
                why += f"; {ratios[0][0]!r} is outlier-dominated (max/p99.99 = {ratios[0][1]:.1f})"
            entry.update(precision="fp32", why=why)
        elif unit.name in user:
            entry.update(precision="fp32", why="excluded by the user")
        elif plan.role(nodes.get(unit.name)) == Role.DYNAMIC:
            what = ("an LSTM: com.microsoft.DynamicQuantizeLSTM" if nodes[unit.name].op_type == "LSTM"
                    else "the selector's choice for a weighted MatMul/Gemm between float ops")
            per_token = (nodes[unit.name].op_type != "LSTM"
                         and chosen.result.report.get("config", {}).get("dynamic_granularity") == "per-token")
            entry.update(precision="int8-per-token" if per_token else "int8-dynamic",
                         why=f"int8 weights, activations quantized at run time{' one scale per row' if per_token else ''} "
                             f"({what}); the target holds")
        elif plan.role(nodes.get(unit.name)) == Role.COMPUTE:
            node = nodes[unit.name]
            tensors = [v.name for v in [*node.inputs[:2], *node.outputs] if v is not None]
            ranges = "; ".join(f"range of {t!r} by {chosen.methods[t]}" for t in tensors if t in chosen.methods)
            why = "int8: the target holds with it quantized" + (f" ({ranges})" if ranges else f" (ranges by {chosen.base})")
            outliers = [(t, cal.outlier_ratio(t)) for t in tensors if t in cal]
            outliers = [(t, r) for t, r in outliers if r >= OUTLIER_RATIO]
            if outliers:
                method = chosen.methods.get(outliers[0][0], chosen.base)
                why += (f"; repaired: {outliers[0][0]!r} is outlier-dominated (max/p99.99 = {outliers[0][1]:.1f}), "
                        f"its range by {method} instead of min/max")
                entry["outliers"] = {t: round(r, 2) for t, r in outliers}
            entry.update(precision="int8", why=why)
        else:
            entry.update(precision="fp32", why=float_reasons.get(unit.name, "left float by the selector"))
        out.append(entry)
    return out


def metric_label(metric: Any) -> str | None:
    """What the report calls auto's metric: the guard's own label, or "metric" for the user's."""
    return None if metric is None else getattr(metric, "label", "metric")


def auto_section(search: Any, chosen: Any, verdict: str, repairs: list, fallback: dict, dropped: dict,
                 notes: list[str], *, min_sqnr: float | None, min_score: float | None, provider: str,
                 threads: int) -> dict[str, Any]:

    configurations = []
    for c in search.tried:
        entry = {"name": c.name, "min_sqnr_db": _db(c.score.min_sqnr), "meets_target": search.meets(c),
                 "float_nodes": len(c.exclude), "latency_ms": None if c.latency_ms is None else round(c.latency_ms, 4),
                 "precision_changes": c.precision_changes()}
        if c.score.metric is not None:
            entry["metric"] = c.score.metric
        configurations.append(entry)
    return {
        "mode": "auto",
        "target": {"min_sqnr": min_sqnr, "min_score": min_score, "metric": metric_label(search.bench.metric)},
        "provider": provider,
        "threads": threads,
        "verdict": verdict,
        "chosen": chosen.name,
        "fidelity": chosen.score.to_dict(),
        "fp32_latency_ms": round(getattr(search, "fp32_ms", math.nan), 4),
        "eval_samples": len(search.bench.feeds),
        "configurations": configurations,
        "repairs": repairs,
        "ranges": {"base_method": chosen.base, "per_tensor": dict(chosen.methods)},
        "layers": _layers(search, chosen, verdict, fallback, dropped),
        "notes": notes,
    }
