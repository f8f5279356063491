"""An fp16 model is quantized from an fp32 copy, its fp16 inputs and outputs kept
(edgeq/prepare/upcast_float16.py): before, every node stayed float ("input is FLOAT16")."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

import edgeq
from edgeq.metrics import sqnr_db
from edgeq.prepare import prepare_model
from ortutil import op_types, run_ort
from passes.nets import CONV_NET


def _half_net() -> onnx.ModelProto:
    """passes.nets' conv net in float16 throughout (weights, values, input, output), with a Cast
    to float16 and a float16 Constant inside, as half-precision exporters write them."""
    text = CONV_NET.replace("float[", "float16[").replace(
        "  y = Gemm<transB=1>(f, G, GB)",
        "  h = Mul(f, k)\n  c = Cast<to = 10>(h)\n  y = Gemm<transB=1>(c, G, GB)")
    model = onnx.parser.parse_model(text)
    half = onnx.numpy_helper.from_array(np.array(0.5, np.float16))
    model.graph.node.insert(0, onnx.helper.make_node("Constant", [], ["k"], value=half))
    rng = np.random.default_rng(0)
    shapes = {"W1": (8, 3, 3, 3), "B1": (8,), "W2": (8, 8, 3, 3), "B2": (8,), "G": (10, 8), "GB": (10,)}
    for name, shape in shapes.items():
        scale = 0.3 if name.startswith("W") or name == "G" else 0.05
        model.graph.initializer.append(onnx.numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float16), name))
    onnx.checker.check_model(model)
    return model


def _feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((2, 3, 16, 16)).astype(np.float16)} for _ in range(n)]


def test_the_pass_computes_in_fp32_behind_fp16_inputs_and_outputs():
    model = ir.from_proto(_half_net())
    prepared, notes = prepare_model(model, upcast_float16=True)
    assert any("computed in fp32" in n for n in notes)
    assert [v.dtype for v in prepared.graph.inputs] == [ir.DataType.FLOAT16]
    assert [v.dtype for v in prepared.graph.outputs] == [ir.DataType.FLOAT16]
    assert [v.name for v in prepared.graph.outputs] == ["y"]
    assert all(v.dtype == ir.DataType.FLOAT for v in prepared.graph.initializers.values())
    proto = ir.to_proto(prepared)
    for feed in _feeds(2, 1):
        got, ref = run_ort(proto, feed)[0], run_ort(_half_net(), feed)[0]
        assert got.dtype == np.float16
        assert sqnr_db(ref.astype(np.float32), got.astype(np.float32)) > 45  # fp16 rounding apart


def test_edgeq_prepare_alone_keeps_the_precision():
    prepared, notes = prepare_model(ir.from_proto(_half_net()))
    assert any(v.dtype == ir.DataType.FLOAT16 for v in prepared.graph.initializers.values())
    assert any("re-export it in fp32" in n for n in notes)


def test_an_fp16_model_is_quantized():
    result = edgeq.quantize(_half_net(), edgeq.QuantConfig(mode="static"), _feeds(16, 2), progress=False)
    ops = op_types(result.model)
    assert ops.count("QuantizeLinear") >= 3 and "Cast" in ops
    assert [v.dtype for v in result.model.graph.inputs] == [ir.DataType.FLOAT16]
    for feed in _feeds(4, 3):
        got, ref = run_ort(result.model, feed)[0], run_ort(_half_net(), feed)[0]
        assert got.dtype == np.float16
        assert sqnr_db(ref.astype(np.float32), got.astype(np.float32)) > 25
