"""SelectNodesPass: which nodes become int8 and the reason for every node left in float."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from edgeq.config import QuantConfig
from edgeq.metrics import sqnr_db
from edgeq.passes.plan import Role
from ortutil import op_types, run_ort
from passes.helpers import ort_optimized_ops, plan_for, quantize_with_numpy_ranges
from passes.nets import build, conv_net


def _roles(model: ir.Model, plan) -> list[tuple[str, str]]:
    return [(n.op_type, plan.role(n)) for n in model.graph]


def test_conv_net_roles():
    model, plan = plan_for(conv_net())
    assert _roles(model, plan) == [
        ("Conv", Role.COMPUTE), ("Relu", Role.FOLDED), ("MaxPool", Role.PASSTHROUGH),
        ("Conv", Role.COMPUTE), ("Relu", Role.FOLDED), ("Add", Role.COMPUTE),
        ("GlobalAveragePool", Role.COMPUTE), ("Flatten", Role.PASSTHROUGH), ("Gemm", Role.COMPUTE),
    ]


ISOLATED = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,16] x) => (float[1,16] y) {
  s = Softmax(x)
  a = Add(s, C)
  y = Softmax(a)
}"""


def test_isolated_light_op_stays_float_with_reason():
    model, plan = plan_for(build(ISOLATED, {"C": np.ones(16)}))
    add = model.graph.node(1)
    assert plan.role(add) == Role.FLOAT
    assert "comes from a float op" in plan.decisions[add].reason
    assert "Softmax stays float" in plan.decisions[model.graph.node(0)].reason
    assert not plan.values  # nothing to calibrate, nothing inserted


TRANSFORMER_BLOCK = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8,16] x) => (float[1,8,16] y) {
  u = MatMul(x, W1)
  ur = Relu(u)
  h = MatMul(ur, W)
  hb = Add(h, B)
  r = Add(hb, x)
  y = LayerNormalization<axis=-1>(r, gamma, beta)
}"""


def test_matmul_feeding_float_ops_keeps_float_output(rng, tmp_path):
    proto = build(TRANSFORMER_BLOCK, {"W1": rng.normal(0, 0.3, (16, 16)), "W": rng.normal(0, 0.2, (16, 16)),
                                      "B": rng.normal(0, 0.1, 16),
                                      "gamma": np.ones(16), "beta": np.zeros(16)})
    data = [{"x": rng.normal(0, 1, (1, 8, 16)).astype(np.float32)} for _ in range(4)]
    model, plan = quantize_with_numpy_ranges(proto, data)
    matmul = [n for n in model.graph if n.op_type == "MatMul"][1]
    assert plan.role(matmul) == Role.COMPUTE
    add = matmul.outputs[0].consumers()[0]
    assert add.op_type == "Add"  # no Q/DQ after the MatMul: its output stays float
    bias = add.inputs[1].producer()  # the bias is int32 behind a DQ (scale = s_in * s_w)
    assert bias.op_type == "DequantizeLinear" and bias.inputs[0].dtype == ir.DataType.INT32
    reasons = {n.op_type: d.reason for n, d in plan.decisions.items() if d.role == Role.FLOAT}
    assert "int8" in reasons["Add"] and "LayerNormalization" in reasons["LayerNormalization"]
    # ORT must not turn MatMul+Add into a float Gemm: it runs one int8 QGemm (static shapes)
    ops = ort_optimized_ops(model, tmp_path)
    assert {"QGemm", "QLinearMatMul"} & set(ops) and "Gemm" not in ops and "MatMul" not in ops, ops
    ref = np.concatenate([run_ort(proto, f)[0] for f in data])
    got = np.concatenate([run_ort(model, f)[0] for f in data])
    assert sqnr_db(ref, got) > 30


@pytest.mark.parametrize("exclude", [("Add",), ("second_conv",)])
def test_exclude_by_op_type_or_name(exclude):
    proto = conv_net()
    proto.graph.node[3].name = "second_conv"
    model, plan = plan_for(proto, QuantConfig(exclude=exclude))
    node = next(n for n in model.graph if n.op_type in exclude or n.name in exclude)
    assert plan.role(node) == Role.FLOAT and "--exclude" in plan.decisions[node].reason


def test_dynamic_mode_leaves_conv_float_and_says_why():
    model, plan = plan_for(conv_net(), QuantConfig(mode="dynamic"))
    conv = model.graph.node(0)
    assert plan.role(conv) == Role.FLOAT and "dynamic_conv" in plan.decisions[conv].reason
    assert plan.role(model.graph.node(8)) == Role.DYNAMIC  # the Gemm


SUBGRAPH = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4] x, bool c) => (float[1,4] y) {
  m = MatMul(x, W)
  y = If(c) <then_branch = t () => (float[1,4] ty) { ty = MatMul(m, W) },
             else_branch = e () => (float[1,4] ey) { ey = Relu(m) }>
}"""


def test_subgraph_nodes_follow_the_main_graph_rules(rng):
    """select.py (11): a branch's tiny MatMul (outer-scope input) is an isolated small op, its Relu
    has nothing to fold into; quantizing inside bodies: tests/passes/test_subgraph_quantize.py."""
    proto = build(SUBGRAPH, {"W": rng.normal(0, 0.5, (4, 4))})
    data = [{"x": rng.normal(0, 1, (1, 4)).astype(np.float32), "c": np.array(flag)} for flag in (True, False)]
    model, plan = quantize_with_numpy_ranges(proto, data)
    inner = {n.op_type: plan.decisions[n] for n in plan.decisions if n.graph is not model.graph}
    assert inner["MatMul"].role == Role.FLOAT and "multiply-adds per output" in inner["MatMul"].reason
    assert inner["Relu"].role == Role.FLOAT and "nothing to fold" in inner["Relu"].reason
    assert "control flow" in plan.decisions[next(n for n in model.graph if n.op_type == "If")].reason
    onnx.checker.check_model(ir.to_proto(model))
    for feed in data:
        np.testing.assert_allclose(run_ort(model, feed)[0], run_ort(proto, feed)[0], atol=0.1)


FFN = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8,64] x) => (float[1,8,32] y) {
  n = LayerNormalization<axis=-1>(x, gamma, beta)
  h = MatMul(n, W)
  hb = Add(h, B)
  y = Erf(hb)
}"""


@pytest.mark.parametrize("fmt, expected", [("qdq", ["LayerNormalization", "DynamicQuantizeMatMul", "Erf"]),
                                           ("qoperator", None)])
def test_weighted_matmul_between_float_ops_goes_dynamic_in_qdq_format(fmt, expected, rng):
    proto = build(FFN, {"gamma": np.ones(64), "beta": np.zeros(64), "W": rng.normal(0, 0.2, (64, 32)),
                        "B": rng.normal(0, 0.1, 32)})
    data = [{"x": rng.normal(0, 1, (1, 8, 64)).astype(np.float32)} for _ in range(4)]
    model, plan = quantize_with_numpy_ranges(proto, data, QuantConfig(format=fmt))
    matmul = next(n for n in plan.decisions if n.op_type == "MatMul")
    if expected is None:  # qoperator needs static scales: a static QDQ MatMul
        assert plan.role(matmul) == Role.COMPUTE and "QuantizeLinear" in op_types(model)
        return
    assert plan.role(matmul) == Role.DYNAMIC and "per inference" in plan.decisions[matmul].reason
    assert op_types(model) == expected  # the bias Add folded into the kernel
    ref = np.concatenate([run_ort(proto, f)[0] for f in data])
    got = np.concatenate([run_ort(model, f)[0] for f in data])
    assert sqnr_db(ref, got) > 30


ATTENTION = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8,64] x) => (float[1,8,8] y) {
  q = MatMul(x, WQ)
  k = MatMul(x, WK)
  kt = Transpose<perm=[0,2,1]>(k)
  s = MatMul(q, kt)
  y = Softmax(s)
}"""


def test_attention_scores_stay_float_and_projections_go_dynamic(rng):
    proto = build(ATTENTION, {"WQ": rng.normal(0, 0.2, (64, 16)), "WK": rng.normal(0, 0.2, (64, 16))})
    data = [{"x": rng.normal(0, 1, (1, 8, 64)).astype(np.float32)} for _ in range(4)]
    model, plan = quantize_with_numpy_ranges(proto, data)
    scores = next(n for n in plan.decisions if n.op_type == "MatMul" and n.inputs[1].name == "kt")
    assert plan.role(scores) == Role.FLOAT and "int8 consumer" in plan.decisions[scores].reason
    assert op_types(model) == ["DynamicQuantizeLinear", "MatMulIntegerToFloat", "MatMulIntegerToFloat",
                               "Transpose", "MatMul", "Softmax"]
    ref = np.concatenate([run_ort(proto, f)[0] for f in data])
    got = np.concatenate([run_ort(model, f)[0] for f in data])
    assert sqnr_db(ref, got) > 25  # 27.0 dB with 7-bit weights (conftest), sharpened by the softmax


def test_conv_on_a_1x1_map_stays_float_with_its_reason():
    """Squeeze-excite: GlobalAveragePool -> 1x1 Conv -> Relu -> 1x1 Conv -> Sigmoid -> Mul. The
    gate Convs see one value per channel per image: float, named reason; the main Convs int8."""
    import onnx

    import edgeq

    rng = np.random.default_rng(0)
    w = {n: rng.normal(0, 0.3, s).astype(np.float32) for n, s in
         (("w1", (16, 8, 3, 3)), ("w2", (4, 16, 1, 1)), ("w3", (16, 4, 1, 1)), ("w4", (8, 16, 3, 3)))}
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 8, 16, 16] x) => (float[1, 8, 16, 16] y) {
        a = Conv <pads = [1, 1, 1, 1]> (x, w1)
        r = Relu(a)
        p = GlobalAveragePool(r)
        s1 = Conv(p, w2)
        s2 = Relu(s1)
        s3 = Conv(s2, w3)
        gate = Sigmoid(s3)
        m = Mul(r, gate)
        y = Conv <pads = [1, 1, 1, 1]> (m, w4)
    }"""
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in w.items())
    model = onnx.shape_inference.infer_shapes(model)
    data = [{"x": rng.normal(size=(1, 8, 16, 16)).astype(np.float32)} for _ in range(4)]
    report = edgeq.quantize(model, edgeq.QuantConfig(), data, progress=False).report
    gate = [e for e in report["float"] if e["op"] == "Conv"]
    assert len(gate) == 2 and all("1x1 map" in e["reason"] for e in gate)
    assert sum(q["op"] == "Conv" for q in report["quantized"]) == 2
