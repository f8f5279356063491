"""int4 weights read through a Cast to int8 (passes/int4_storage.py): the same outputs, the codes
still packed in the file, and onnxruntime's integer kernels where a DequantizeLinear of int4 codes
ran a float Conv; blocked (MatMulNBits-bound) DequantizeLinear nodes are left as they are."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from edgeq.passes.int4_storage import Int4StoragePass
from ortutil import run_ort
from passes.helpers import ort_optimized_ops

RNG = np.random.default_rng(0)


def _int4(name: str, values: np.ndarray) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.INT4, values.shape, values.astype(np.int8).flatten().tolist())


def _w4a8_net() -> onnx.ModelProto:
    """Two 3x3 Convs with QDQ activations, int4 weights per output channel sharing one zero point,
    then a MatMul whose weight is int4 in blocks of 16 along K (what MatMulNBits reads)."""
    codes = [RNG.integers(-7, 8, (16, c, 3, 3)) for c in (8, 16)]
    block = RNG.integers(-7, 8, (16, 4))
    inits = [_int4("w0", codes[0]), _int4("w1", codes[1]), _int4("zp", np.zeros(16, np.int8)),
             _int4("wb", block), _int4("zb", np.zeros((1, 4), np.int8)),
             numpy_helper.from_array(np.full((1, 4), 0.05, np.float32), "sb"),
             numpy_helper.from_array(RNG.uniform(0.01, 0.03, 16).astype(np.float32), "s0"),
             numpy_helper.from_array(RNG.uniform(0.01, 0.03, 16).astype(np.float32), "s1"),
             numpy_helper.from_array(np.float32(0.05), "xs"), numpy_helper.from_array(np.uint8(128), "xz")]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w0", "s0", "zp"], ["w0d"], axis=0),
        helper.make_node("Conv", ["xd", "w0d"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c0", "xs", "xz"], ["r0q"]),
        helper.make_node("DequantizeLinear", ["r0q", "xs", "xz"], ["r0d"]),
        helper.make_node("DequantizeLinear", ["w1", "s1", "zp"], ["w1d"], axis=0),
        helper.make_node("Conv", ["r0d", "w1d"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c1", "xs", "xz"], ["c1q"]),
        helper.make_node("DequantizeLinear", ["c1q", "xs", "xz"], ["c1d"]),
        helper.make_node("GlobalAveragePool", ["c1d"], ["g"]),
        helper.make_node("Flatten", ["g"], ["p"]),
        helper.make_node("DequantizeLinear", ["wb", "sb", "zb"], ["wbd"], axis=0, block_size=16),
        helper.make_node("MatMul", ["p", "wbd"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "w4a8", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def test_conv_weights_stay_int4_and_run_on_integer_kernels(tmp_path):
    proto = _w4a8_net()
    feed = {"x": RNG.uniform(-3, 3, (1, 8, 12, 12)).astype(np.float32)}
    before = ir.serde.deserialize_model(proto)
    assert collections.Counter(ort_optimized_ops(before, tmp_path))["QLinearConv"] == 0  # int4 DQ: float Conv
    model = ir.serde.deserialize_model(proto)
    assert Int4StoragePass()(model).modified
    out = ir.to_proto(model)
    onnx.checker.check_model(out)
    types = {t.name: t.data_type for t in out.graph.initializer}
    assert types["w0"] == types["w1"] == types["wb"] == TensorProto.INT4  # packed in the file
    casts = [n for n in out.graph.node if n.op_type == "Cast"]
    assert sorted(n.input[0] for n in casts) == ["w0", "w1"]  # the blocked MatMul weight is left (2)
    assert "zp" not in types and types["zp_8"] == TensorProto.INT8  # one int8 copy of the shared zero point (3)
    assert types["zb"] == TensorProto.INT4
    ops = collections.Counter(ort_optimized_ops(model, tmp_path))
    assert ops["QLinearConv"] == 2 and ops["Cast"] == 0 and ops["Conv"] == 0
    np.testing.assert_array_equal(run_ort(out, feed)[0], run_ort(proto, feed)[0])


def test_int8_weights_are_left_alone():
    proto = _w4a8_net()
    for t in proto.graph.initializer:
        if t.data_type == TensorProto.INT4:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.int8), t.name))
    assert not Int4StoragePass()(ir.serde.deserialize_model(proto)).modified
