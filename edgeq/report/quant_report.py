"""The quantize report: a JSON-ready dict built from the plan; JSON is the source of truth.

Sections: ``config``, ``summary`` (counts, sizes), ``quantized`` (every int8 node with its
activation scales/zero points and weight-scale summary), ``float`` (every node left in float
and why), ``prepare`` notes, ``qoperator`` (when rewritten), ``evaluation`` (with eval data).
"""

from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING, Any

from edgeq.passes.plan import QuantPlan, Role
from edgeq.passes.select import data_inputs

if TYPE_CHECKING:
    import onnx_ir as ir

    from edgeq.config import QuantConfig

__all__ = ["node_labels", "activation_params", "build_report", "write_report", "json_safe"]

REPORT_VERSION = 1


def node_labels(graph: ir.Graph) -> dict[ir.Node, str]:
    """A stable, unique label per node: its name, else ``OpType_index``; inside a subgraph, else
    ``<holder's label>/<attribute>/OpType_index`` (subgraphs after the main graph's nodes)."""
    import onnx_ir as ir

    labels: dict[ir.Node, str] = {}
    for i, node in enumerate(graph):
        labels[node] = node.name or f"{node.op_type}_{i}"
    holders = list(graph)
    while holders:
        node = holders.pop(0)
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                for i, inner in enumerate(attr.as_graph()):
                    labels[inner] = inner.name or f"{labels[node]}/{attr.name}/{inner.op_type}_{i}"
                    holders.append(inner)
    return labels


def activation_params(plan: QuantPlan, labels: dict[ir.Node, str]) -> dict[ir.Node, dict[str, Any]]:
    """Scales/zero points around each int8 node; take it before the rewrite changes inputs."""
    return {node: _activation_params(plan, node) for node in labels if plan.role(node) != Role.FLOAT}


def _activation_params(plan: QuantPlan, node: ir.Node) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for value in [*data_inputs(node), *node.outputs]:
        if value in plan.values and plan.root(value) in plan.qparams:
            qp = plan.input_params(node, value)  # int16 for an int16 node
            out[value.name or "?"] = {"scale": qp.scale, "zero_point": qp.zero_point, "dtype": qp.dtype,
                                      "lo": qp.lo, "hi": qp.hi}
    for consumer in [c for v in node.outputs for c in v.consumers()]:
        if plan.role(consumer) == Role.FOLDED:
            for value in consumer.outputs:
                if value in plan.values and plan.root(value) in plan.qparams:
                    qp = plan.input_params(node, value)
                    out[value.name or "?"] = {"scale": qp.scale, "zero_point": qp.zero_point,
                                              "dtype": qp.dtype, "lo": qp.lo, "hi": qp.hi}
    return out


def build_report(
    plan: QuantPlan,
    labels: dict[ir.Node, str],
    config: QuantConfig,
    activations: dict[ir.Node, dict[str, Any]],
    *,
    source: str | None,
    size_before: int,
    size_after: int,
    prepare_notes: list[str],
    ranges_info: dict[str, Any] | None,
    seconds: float,
) -> dict[str, Any]:
    """Everything but evaluation; ``labels`` must be taken before the graph was rewritten."""
    quantized, left_float = [], []
    for node, label in labels.items():
        decision = plan.decisions.get(node)
        role = decision.role if decision else Role.FLOAT
        entry: dict[str, Any] = {"node": label, "op": node.op_type}
        if role == Role.FLOAT:
            entry["reason"] = (decision.reason if decision else "") or "not selected"
            left_float.append(entry)
            continue
        entry["role"] = role
        if role != Role.DYNAMIC:
            entry["activations"] = activations.get(node, {})
        weights = plan.weights.get(node)
        if weights:
            entry["weights"] = weights
        quantized.append(entry)
    subgraph_float = [
        {"node": n.name or n.op_type, "op": n.op_type, "reason": d.reason}
        for n, d in plan.decisions.items() if n not in labels
    ]
    compute = sum(1 for e in quantized if e["role"] in (Role.COMPUTE, Role.DYNAMIC))
    return {
        "format": "edgeq-quantize-report",
        "version": REPORT_VERSION,
        "source": source,
        "config": config.to_dict(),
        "summary": {
            "nodes": len(labels),
            "quantized": len(quantized),
            "int8_kernels": compute,
            "left_float": len(left_float),
            "size_before_bytes": size_before,
            "size_after_bytes": size_after,
            "size_ratio": (size_after / size_before) if size_before else None,
            "seconds": round(seconds, 3),
        },
        "quantized": quantized,
        "float": left_float + subgraph_float,
        "prepare": list(prepare_notes),
        "calibration": ranges_info,
        "notes": list(plan.notes),
    }


def json_safe(obj: Any) -> Any:
    """Replace inf/nan (not valid JSON) by strings, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else "-inf" if obj < 0 else "nan"
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def report_files(path: str | os.PathLike) -> tuple[str, str, str]:
    """The files ``write_report(report, path)`` may write: the JSON, its Markdown and HTML siblings."""
    path = os.fspath(path)
    stem = path[:-5] if path.endswith(".json") else path
    return path, stem + ".md", stem + ".html"


def write_report(report: dict[str, Any], path: str | os.PathLike, *, inputs=()) -> tuple[str, str]:
    """Write ``path`` (JSON) and its Markdown rendering beside it (``.md``); all atomic. Sections
    that higher layers registered (``edgeq.report.sections``) add their Markdown, and an HTML page
    beside them (``.html``): auto mode's error-vs-latency chart and per-layer precision table."""
    from edgeq.io import atomic_path
    from edgeq.report.markdown import render_markdown
    from edgeq.report.sections import sections_in

    path, md_path, html_path = report_files(path)
    with atomic_path(path, inputs) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(json_safe(report), f, indent=1)
    markdown = render_markdown(report)
    for section in sections_in(report):
        markdown += "\n" + section.markdown(report)
        if section.html is not None:
            with atomic_path(html_path, list(inputs)) as tmp:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(section.html(report))
    with atomic_path(md_path, inputs) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(markdown)
    return path, md_path
