"""What would block or limit quantization of a model, listed before any work is done.

``check(model)`` runs ``CheckQuantizabilityPass``, an inspect pass (the model is left unchanged),
and returns its findings:

* ``blocker``: int8 quantization cannot proceed as is.
* ``limit``: quantization proceeds but part of the model stays float or prepare has to change
  something that may fail (an fp16/bf16 model computed in fp32, opset < 13, subgraphs, custom
  domains, float islands, unknown shapes).
* ``info``: handled by prepare or worth knowing (Constant-fed weights, external data, dynamic
  dims).
"""

from __future__ import annotations

import collections
import dataclasses
import logging

import onnx_ir as ir

from edgeq.graph import ONNX_DOMAINS, InspectPass, onnx_opset
from edgeq.prepare._base import FLOAT_TYPES

__all__ = ["Finding", "check", "CheckQuantizabilityPass", "SEVERITIES", "INT8_OPS", "WEIGHT_OPS"]

logger = logging.getLogger(__name__)

SEVERITIES = ("blocker", "limit", "info")

# Ops that take weights which quantizers turn into int8 (input index of the weight).
WEIGHT_OPS = {"Conv": 1, "ConvTranspose": 1, "MatMul": 1, "Gemm": 1, "Gather": 0, "LSTM": 1, "GRU": 1}
# Ops with int8 (QDQ / QLinear) kernels in onnxruntime's CPU provider, or that move data only
# (LSTM: int8 weights through com.microsoft.DynamicQuantizeLSTM, passes/quantize_recurrent.py).
INT8_OPS = frozenset(
    {
        "Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Relu", "Clip", "LeakyRelu",
        "Sigmoid", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Resize",
        "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Split", "Slice", "Gather",
        "Softmax", "Pad", "ArgMax", "Where", "Expand", "Tile", "DepthToSpace", "SpaceToDepth",
        "Identity", "Dropout", "Shape", "MatMulInteger", "ConvInteger", "LSTM",
        "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
    }
)
_COMPUTE = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


@dataclasses.dataclass(frozen=True)
class Finding:
    """One thing that blocks, limits or is worth knowing about quantization."""

    severity: str  # "blocker" | "limit" | "info"
    where: str  # the node, value or file concerned
    message: str

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")

    def __str__(self) -> str:
        return f"[{self.severity}] {self.where}: {self.message}"


def _names(items, limit: int = 3) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _opset(model: ir.Model) -> list[Finding]:
    opset = onnx_opset(model)
    if opset >= 13:
        return []
    return [
        Finding(
            "limit",
            f"opset {opset}",
            "per-channel QDQ needs opset >= 13: prepare upgrades it with onnx's version "
            "converter, which can fail on some operators",
        )
    ]


def _dtype(model: ir.Model) -> list[Finding]:
    graph = model.graph
    values = [*graph.inputs, *graph.outputs, *graph.initializers.values()]
    low = sorted({str(v.dtype) for v in values if v.dtype in (ir.DataType.FLOAT16, ir.DataType.BFLOAT16)})
    if not low:
        return []
    return [
        Finding(
            "limit",
            "model dtype",
            f"the model holds {', '.join(low)} tensors: quantize computes it in fp32 (its inputs and outputs keep "
            "their type, through Casts; prepare/upcast_float16.py); a layer left float is fp32, twice its fp16 size",
        )
    ]


def _constant_weights(model: ir.Model) -> list[Finding]:
    fed: list[str] = []
    for node in model.graph.all_nodes():
        index = WEIGHT_OPS.get(node.op_type)
        if index is None or index >= len(node.inputs) or node.inputs[index] is None:
            continue
        producer = node.inputs[index].producer()
        while producer is not None and producer.op_type == "Identity":
            producer = producer.inputs[0].producer() if producer.inputs[0] is not None else None
        if producer is not None and producer.op_type == "Constant":
            fed.append(node.name or node.op_type)
    if not fed:
        return []
    return [
        Finding(
            "info",
            _names(fed),
            f"{len(fed)} weight(s) come from Constant nodes, which other quantizers leave in "
            "float: prepare turns them into initializers",
        )
    ]


def _subgraphs(model: ir.Model) -> list[Finding]:
    findings = []
    for node in model.graph.all_nodes():
        graphs = [
            g
            for attr in node.attributes.values()
            if attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
            for g in (attr.as_graphs() if attr.type == ir.AttributeType.GRAPHS else [attr.as_graph()])
        ]
        if not graphs:
            continue
        ops = collections.Counter(n.op_type for g in graphs for n in g.all_nodes())
        heavy = {op: c for op, c in ops.items() if op in _COMPUTE}
        what = ", ".join(f"{op} x{c}" for op, c in sorted(heavy.items())) or "no Conv/MatMul"
        if node.op_type in ("If", "Loop", "Scan") and node.domain in ONNX_DOMAINS:
            message = (f"its subgraph(s) ({what}) are quantized in the QDQ format only, where calibration "
                       "samples run them (a branch no sample takes stays float); the node itself runs in float")
        else:
            message = f"its subgraph(s) stay float ({what}): only If/Loop/Scan bodies are quantized"
        findings.append(Finding("limit", f"{node.op_type} node {node.name or '(unnamed)'}", message))
    return findings


def _custom_domains(model: ir.Model) -> list[Finding]:
    by_domain: dict[str, list[str]] = collections.defaultdict(list)
    for node in model.graph.all_nodes():
        if node.domain not in ONNX_DOMAINS:
            by_domain[node.domain].append(node.name or node.op_type)
    return [
        Finding(
            "limit",
            f"domain {domain}",
            f"{len(nodes)} node(s) ({_names(nodes)}) from a custom domain stay float and hide "
            "shapes from ONNX shape inference",
        )
        for domain, nodes in sorted(by_domain.items())
    ]


def _producer_op(node: ir.Node) -> str | None:
    source = node.inputs[0] if node.inputs else None
    producer = source.producer() if source is not None else None
    return producer.op_type if producer is not None else None


def _is_float(value: ir.Value, types: dict[str, int] | None) -> bool:
    if value.dtype is not None:
        return value.dtype in FLOAT_TYPES
    if types is not None and value.name in types:
        return ir.DataType(types[value.name]) in FLOAT_TYPES
    return True  # unknown: assume float


def _float_islands(model: ir.Model, types: dict[str, int] | None) -> list[Finding]:
    islands: dict[str, list[str]] = collections.defaultdict(list)
    for node in model.graph:
        if node.op_type in INT8_OPS or node.domain not in ONNX_DOMAINS:
            continue
        if any(a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for a in node.attributes.values()):
            continue  # reported by _subgraphs
        if not all(_is_float(out, types) for out in node.outputs):
            continue  # integer shape arithmetic is no island
        if node.op_type == "BatchNormalization" and _producer_op(node) in _COMPUTE:
            continue  # prepare folds it
        before = {v.producer().op_type for v in node.inputs if v is not None and v.producer() is not None}
        after = {u.node.op_type for out in node.outputs for u in out.uses()}
        if before & (INT8_OPS - {"Shape"}) and after & INT8_OPS:
            islands[node.op_type].append(node.name or node.op_type)
    return [
        Finding(
            "limit",
            _names(nodes),
            f"{len(nodes)} {op} node(s) have no int8 kernel and sit between int8-capable ops: "
            "they run in float between a DequantizeLinear and a QuantizeLinear",
        )
        for op, nodes in sorted(islands.items())
    ]


def _external_data(model: ir.Model) -> list[Finding]:
    external = [
        v.name
        for g in model.graphs()
        for v in g.initializers.values()
        if isinstance(v.const_value, ir.ExternalTensor)
    ]
    if not external:
        return []
    total = sum(model.graph.initializers[n].const_value.nbytes for n in external if n in model.graph.initializers)
    return [
        Finding(
            "info",
            _names(external),
            f"{len(external)} weight(s) ({total / 2**20:.0f} MiB) live in external data: read "
            "lazily; outputs over 1.8 GB are written with external data too",
        )
    ]


def _dynamic_dims(model: ir.Model) -> list[Finding]:
    dynamic = []
    for value in model.graph.inputs:
        if value.name in model.graph.initializers:
            continue
        if value.shape is None:
            dynamic.append(f"{value.name} (unknown rank)")
        elif any(not isinstance(d, int) for d in value.shape):
            dims = ",".join(str(d) if isinstance(d, int) else (d.value or "?") for d in value.shape)
            dynamic.append(f"{value.name} [{dims}]")
    if not dynamic:
        return []
    return [
        Finding(
            "info",
            _names(dynamic, 5),
            "input(s) with dynamic dims: calibration data may mix sizes; shapes downstream are "
            "symbolic",
        )
    ]


def _infer(model: ir.Model) -> tuple[dict[str, int] | None, str]:
    """Element type of every value ONNX inference can type (None and the reason when it fails)."""
    import onnx
    from onnx_ir.passes.common import _c_api_utils

    def infer(proto):
        return onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False, data_prop=True)

    try:
        inferred = _c_api_utils.call_onnx_api(infer, model)
    except Exception as e:  # onnx raises several error types; the caller reports it
        return None, str(e).splitlines()[0] if str(e) else type(e).__name__
    types = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        t = vi.type.tensor_type
        if vi.type.HasField("tensor_type"):
            if t.HasField("shape") and t.elem_type:
                types[vi.name] = t.elem_type
        elif vi.type.WhichOneof("value"):
            types[vi.name] = 0  # a sequence, map or optional: known, not a float tensor
    return types, ""


def _unknown_shapes(model: ir.Model, types: dict[str, int] | None, reason: str) -> list[Finding]:
    if types is None:
        return [
            Finding(
                "limit",
                "shape inference",
                f"ONNX shape inference fails ({reason}): prepare falls back to running the model "
                "on calibration data (pass --calib)",
            )
        ]
    unknown = [
        v.name
        for node in model.graph
        for v in node.outputs
        if v.name and v.name not in types and node.op_type != "Constant"
    ]
    if not unknown:
        return []
    return [
        Finding(
            "limit",
            _names(unknown),
            f"{len(unknown)} value(s) have shapes ONNX inference cannot find: prepare infers "
            "them by running the model on calibration data (pass --calib)",
        )
    ]


class CheckQuantizabilityPass(InspectPass):
    """List what blocks or limits quantization in ``self.findings``, blockers first."""

    def __init__(self) -> None:
        super().__init__()
        self.findings: list[Finding] = []

    def inspect(self, model: ir.Model) -> None:
        types, reason = _infer(model)
        findings = [
            *_dtype(model),
            *_opset(model),
            *_constant_weights(model),
            *_unknown_shapes(model, types, reason),
            *_subgraphs(model),
            *_custom_domains(model),
            *_float_islands(model, types),
            *_external_data(model),
            *_dynamic_dims(model),
        ]
        order = {s: i for i, s in enumerate(SEVERITIES)}
        self.findings = sorted(findings, key=lambda f: order[f.severity])


def check(model: ir.Model) -> list[Finding]:
    """Findings about ``model`` (not modified), blockers first."""
    pass_ = CheckQuantizabilityPass()
    pass_(model)
    return pass_.findings
