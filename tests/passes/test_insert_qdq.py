"""InsertQDQPass / ShareScalesPass / the static pipeline on small graphs: structure, fusion, numerics."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.metrics import sqnr_db
from ortutil import op_types, run_ort
from passes.helpers import ort_optimized_ops, quantize_with_numpy_ranges
from passes.nets import build, conv_net, feeds

CONV_RELU = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8,8,8] x) => (float[1,4,8,8] y) {
  c = Conv<pads=[1,1,1,1]>(x, W, B)
  y = Relu(c)
}"""

SHAPES = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3,8,8] x) => (float[1,10] y) {
  c = Conv<pads=[1,1,1,1]>(x, W, B)
  r = Relu(c)
  p = MaxPool<kernel_shape=[2,2], strides=[2,2]>(r)
  f = Reshape(p, shape)
  y = Gemm<transB=1>(f, G, GB)
}"""


def _conv_relu():
    rng = np.random.default_rng(0)
    return build(CONV_RELU, {"W": rng.normal(0, 0.3, (4, 8, 3, 3)), "B": rng.normal(0, 0.1, 4)})


def test_conv_relu_sequence_relu_folded_and_output_float():
    proto = _conv_relu()
    model, _ = quantize_with_numpy_ranges(proto, feeds((1, 8, 8, 8)))
    # input Q/DQ, weight DQ, bias DQ, Conv, Relu (folded: no Q/DQ between), output Q/DQ
    assert op_types(model) == ["QuantizeLinear", "DequantizeLinear", "DequantizeLinear", "DequantizeLinear",
                               "Conv", "Relu", "QuantizeLinear", "DequantizeLinear"]
    out = model.graph.outputs[0]
    assert out.name == "y" and out.dtype == ir.DataType.FLOAT
    assert out.producer().op_type == "DequantizeLinear"
    relu_q = model.graph.node(6)
    assert relu_q.inputs[2].const_value.numpy() == 0  # range starts at 0: ORT drops the Relu
    onnx.checker.check_model(ir.to_proto(model), full_check=True)


def test_scale_shared_through_maxpool_and_reshape(rng):
    proto = build(SHAPES, {"W": rng.normal(0, 0.3, (4, 3, 3, 3)), "B": rng.normal(0, 0.1, 4),
                           "shape": np.array([1, 64]), "G": rng.normal(0, 0.3, (10, 64)),
                           "GB": rng.normal(0, 0.1, 10)})
    model, plan = quantize_with_numpy_ranges(proto, feeds((1, 3, 8, 8)))
    qs = [n for n in model.graph if n.op_type == "QuantizeLinear"]
    by_input = {n.inputs[0].name: n for n in qs}
    relu_q, pool_q, reshape_q = by_input["r"], by_input["p"], by_input["f"]
    assert relu_q.inputs[1] is pool_q.inputs[1] is reshape_q.inputs[1]  # the same initializer
    assert relu_q.inputs[2] is pool_q.inputs[2] is reshape_q.inputs[2]
    assert len(plan.roots()) == 2  # x and r: MaxPool and Reshape calibrate nothing


def test_conv_net_fuses_in_ort_and_keeps_fidelity(tmp_path):
    proto = conv_net()
    data = feeds((2, 3, 16, 16), n=8)
    model, _ = quantize_with_numpy_ranges(proto, data)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    fused = ort_optimized_ops(model, tmp_path)
    for op in ("QLinearConv", "QLinearAdd", "QLinearGlobalAveragePool", "QGemm"):
        assert op in fused, fused
    assert "Conv" not in fused and "DequantizeLinear" not in fused, fused
    ref = np.concatenate([run_ort(proto, f)[0] for f in data])
    got = np.concatenate([run_ort(model, f)[0] for f in data])
    assert sqnr_db(ref, got) > 30.0


def test_graph_output_of_int8_producer_keeps_its_name_and_float():
    proto = _conv_relu()
    model, _ = quantize_with_numpy_ranges(proto, feeds((1, 8, 8, 8)))
    assert [o.name for o in model.graph.outputs] == ["y"]
    assert run_ort(model, feeds((1, 8, 8, 8), n=1)[0])[0].dtype == np.float32


DEPTHWISE = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8,8,8] x) => (float[1,8,8,8] y) {
  s = Sigmoid(x)
  c = Conv<pads=[1,1,1,1], group=8>(s, W)
  y = Sigmoid(c)
}"""


def test_isolated_depthwise_conv_stays_float_with_reason(rng):
    proto = build(DEPTHWISE, {"W": rng.normal(0, 0.3, (8, 1, 3, 3))})
    model, plan = quantize_with_numpy_ranges(proto, feeds((1, 8, 8, 8)))
    conv = next(n for n in model.graph if n.op_type == "Conv")
    assert plan.role(conv) == "float" and "9 multiply-adds per output" in plan.decisions[conv].reason
    assert "QuantizeLinear" not in op_types(model)


CONCAT = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,8,8,8] x) => (float[1,4,8,8] y) {
  a = Conv(x, WA, BA)
  ar = Relu(a)
  b = Conv(x, WB, BB)
  c = Concat<axis=1>(ar, b)
  y = Conv(c, WC, BC)
}"""


def test_concat_inputs_used_only_there_share_the_output_scale(rng, tmp_path):
    proto = build(CONCAT, {"WA": rng.normal(0, 0.3, (4, 8, 1, 1)), "BA": rng.normal(0, 0.1, 4),
                           "WB": rng.normal(0, 0.1, (4, 8, 1, 1)), "BB": rng.normal(0, 0.1, 4),
                           "WC": rng.normal(0, 0.3, (4, 8, 1, 1)), "BC": rng.normal(0, 0.1, 4)})
    data = feeds((1, 8, 8, 8))
    model, plan = quantize_with_numpy_ranges(proto, data)
    by_input = {n.inputs[0].name: n for n in model.graph if n.op_type == "QuantizeLinear"}
    assert by_input["ar"].inputs[1] is by_input["b"].inputs[1] is by_input["c"].inputs[1]
    assert "QLinearConcat" in ort_optimized_ops(model, tmp_path)
    ref = np.concatenate([run_ort(proto, f)[0] for f in data])
    got = np.concatenate([run_ort(model, f)[0] for f in data])
    assert sqnr_db(ref, got) > 30
