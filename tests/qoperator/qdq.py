"""Test helper: quantize a float ONNX graph into edgeq's standard QDQ form with numpy scales.

Activations: min/max from one onnxruntime run (ranges include 0), asymmetric uint8 (or int8);
weights of Conv/MatMul/Gemm: symmetric int8 per output channel, within 7 bits where this CPU's
onnxruntime saturates 8-bit products (as edgeq's own: ``weights.weight_qmax``, depthwise Convs
excepted); biases: int32 at s_x * s_w.
A Conv/MatMul/Gemm/Add output read only by a Relu is not quantized (``op -> Relu -> Q``), as
the quantizer folds it. Not a quantizer: just enough to build inputs for the rewrite tests.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.config import QuantConfig
from edgeq.passes.quantize_weights import is_depthwise
from edgeq.passes.weights import QMAX, weight_qmax
from ortutil import run_ort

__all__ = ["quantize_qdq", "lsb_diff", "with_weights"]

_WEIGHT_AXIS = {"Conv": 0, "MatMul": 1}
_FOLDS = ("Conv", "MatMul", "Gemm", "Add")
_SHARED = ("MaxPool", "Reshape", "Transpose", "Slice", "Flatten", "Squeeze", "Unsqueeze", "Relu")


def _ranges(model: onnx.ModelProto, feeds) -> dict[str, tuple[float, float]]:
    m = onnx.shape_inference.infer_shapes(model)
    names = [v.name for v in m.graph.value_info if v.type.tensor_type.elem_type == 1]
    names += [i.name for i in m.graph.input] + [o.name for o in m.graph.output]
    existing = {o.name for o in m.graph.output}
    for n in names:
        if n not in existing:
            m.graph.output.append(onnx.helper.make_tensor_value_info(n, 1, None))
            existing.add(n)
    outs = run_ort(m, feeds)
    all_names = [o.name for o in m.graph.output]
    ranges = {n: (float(a.min()), float(a.max())) for n, a in zip(all_names, outs)}
    for n, a in feeds.items():
        ranges[n] = (float(a.min()), float(a.max()))
    return ranges


def _act_params(lo: float, hi: float, dtype) -> tuple[np.ndarray, np.ndarray]:
    info = np.iinfo(dtype)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / (info.max - info.min), 1e-8)
    zp = np.clip(round(info.min - lo / scale), info.min, info.max)
    return np.array(scale, np.float32), np.array(zp, dtype)


def _init(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    v = ir.Value(name=name, const_value=ir.tensor(array, name=name))
    v.type, v.shape = ir.TensorType(ir.DataType.from_numpy(array.dtype)), ir.Shape(array.shape)
    graph.register_initializer(v)
    return v


def quantize_qdq(model: onnx.ModelProto, feeds, act_dtype=np.uint8, per_channel=True,
                 quantize_outputs=True, fold_relu=True, skip=(), share=True) -> onnx.ModelProto:
    """QDQ form of ``model``; ``skip`` names float values to leave unquantized; ``share``
    gives value-moving ops (MaxPool, Reshape, ...) their input's range, as quantizers do."""
    ranges = _ranges(model, feeds)
    irm = ir.from_proto(onnx.shape_inference.infer_shapes(model))
    g = irm.graph
    for node in g:  # ops that move values keep their input's scale, as quantizers do
        producer = node.inputs[0].producer() if node.inputs else None
        folded = node.op_type == "Relu" and producer is not None and producer.op_type in _FOLDS
        if share and node.op_type in _SHARED and node.inputs[0].name in ranges and not folded:
            ranges[node.outputs[0].name] = ranges[node.inputs[0].name]
    scales: dict[ir.Value, float] = {}
    count = [0]

    def fresh(base):
        count[0] += 1
        return f"{base}_{count[0]}"

    def insert_qdq(v: ir.Value, after: ir.Node | None):
        s, z = _act_params(*ranges[v.name], act_dtype)
        sv, zv = _init(g, fresh("s"), s), _init(g, fresh("zp"), z)
        q = ir.Node("", "QuantizeLinear", [v, sv, zv], name=fresh("Q"))
        dq = ir.Node("", "DequantizeLinear", [q.outputs[0], sv, zv], name=fresh("DQ"))
        q.outputs[0].name, dq.outputs[0].name = fresh(v.name + "_q"), fresh(v.name + "_dq")
        q.outputs[0].dtype, dq.outputs[0].dtype = ir.DataType.from_numpy(z.dtype), ir.DataType.FLOAT
        q.outputs[0].shape = dq.outputs[0].shape = v.shape
        users = [(u.node, u.idx) for u in v.uses() if u.node is not q]
        for node, idx in users:
            node.replace_input_with(idx, dq.outputs[0])
        if after is None:
            g.insert_before(g.node(0), [q, dq])
        else:
            g.insert_after(after, [q, dq])
        if v.is_graph_output():
            i = list(g.outputs).index(v)
            name = v.name
            v.name = fresh(name + "_f")
            dq.outputs[0].name = name
            g.outputs[i] = dq.outputs[0]
        scales[dq.outputs[0]] = float(s)

    for inp in list(g.inputs):
        if inp.name not in skip:
            insert_qdq(inp, None)
    for node in list(g):
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for out in node.outputs:
            if out.dtype != ir.DataType.FLOAT or out.name in skip:
                continue
            if out.is_graph_output() and not quantize_outputs:
                continue
            uses = list(out.uses())
            if (fold_relu and node.op_type in _FOLDS and len(uses) == 1
                    and uses[0].node.op_type == "Relu" and not out.is_graph_output()):
                continue  # folded: op -> Relu -> Q
            insert_qdq(out, node)
    # weights and biases
    for node in list(g):
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        w = node.inputs[1]
        if w.const_value is None:
            continue
        wa = w.const_value.numpy().astype(np.float64)
        axis = _WEIGHT_AXIS.get(node.op_type)
        if node.op_type == "Gemm":
            tb = node.attributes.get("transB")
            axis = 0 if tb is not None and tb.value else 1
        red = tuple(i for i in range(wa.ndim) if i != axis) if per_channel else None
        qmax = QMAX if is_depthwise(node, wa) else weight_qmax(QuantConfig())
        ws = np.maximum(np.abs(wa).max(axis=red, keepdims=True), 1e-8) / qmax
        wq = np.clip(np.round(wa / ws), -qmax, qmax).astype(np.int8)
        ws_flat = ws.reshape(-1).astype(np.float32)
        wv = _init(g, fresh("w_q"), wq)
        wsv = _init(g, fresh("w_s"), ws_flat if per_channel else ws_flat.reshape(()))
        wzv = _init(g, fresh("w_zp"), np.zeros(ws_flat.shape if per_channel else (), np.int8))
        attrs = [ir.AttrInt64("axis", axis)] if per_channel else []
        dq = ir.Node("", "DequantizeLinear", [wv, wsv, wzv], attributes=attrs, name=fresh("DQw"))
        dq.outputs[0].dtype = ir.DataType.FLOAT
        g.insert_before(node, dq)
        node.replace_input_with(1, dq.outputs[0])
        if len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2].const_value is not None:
            sx = scales[node.inputs[0]]
            bs = (sx * ws_flat.astype(np.float64))
            b = node.inputs[2].const_value.numpy().astype(np.float64)
            bq = np.round(b / bs).astype(np.int32)
            bv = _init(g, fresh("b_q"), bq)
            bsv = _init(g, fresh("b_s"), bs.astype(np.float32) if per_channel else np.array(bs[0], np.float32))
            bzv = _init(g, fresh("b_zp"), np.zeros(bq.shape if per_channel else (), np.int32))
            battrs = [ir.AttrInt64("axis", 0)] if per_channel else []
            bdq = ir.Node("", "DequantizeLinear", [bv, bsv, bzv], attributes=battrs, name=fresh("DQb"))
            bdq.outputs[0].dtype = ir.DataType.FLOAT
            g.insert_before(node, bdq)
            node.replace_input_with(2, bdq.outputs[0])
    for name in [n for n, v in g.initializers.items() if not v.uses()]:
        del g.initializers[name]
    return ir.to_proto(irm)


def lsb_diff(a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """|a - b| in units of the output quantization step."""
    return np.rint(np.abs(a.astype(np.float64) - b.astype(np.float64)) / scale)


def with_weights(text: str, rng, scale: float = 0.3) -> onnx.ModelProto:
    """Parse ONNX text; graph inputs named ``w*``/``b*`` become random float initializers."""
    model = onnx.parser.parse_model(text)
    keep = []
    for inp in model.graph.input:
        if len(inp.name) > 1 and inp.name[0] in "wb" and inp.name[1] in "0123456789_":
            shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
            arr = (rng.standard_normal(shape) * scale).astype(np.float32)
            model.graph.initializer.append(onnx.numpy_helper.from_array(arr, inp.name))
        else:
            keep.append(inp)
    del model.graph.input[:]
    model.graph.input.extend(keep)
    onnx.checker.check_model(model)
    return model
