"""passes/integer_as_float.py: integer MatMuls as the exact sums ONNX defines, against numpy, and
against onnxruntime's own kernels (which saturate 8-bit products on x86 without VNNI)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from edgeq.io import model_bytes
from edgeq.passes.integer_as_float import IntegerAsFloatPass
from edgeq.runtime.cpu import measured

M, K, N = 6, 64, 8

TEXT = """
<ir_version: 8, opset_import: ["" : 13, "com.microsoft" : 1]>
net (uint8[6, 64] a, float[6, 64] x) => (int32[6, 8] y_int, float[6, 8] y_float, float[6, 8] y_dyn) {
    y_int = MatMulInteger(a, w, a_zp, w_zp)
    y_float = com.microsoft.MatMulIntegerToFloat(a, w, a_scale, w_scale, a_zp, w_zp, bias)
    y_dyn = com.microsoft.DynamicQuantizeMatMul(x, w, w_scale, w_zp, bias)
}
"""


def _model(levels: np.ndarray) -> ir.Model:
    proto = onnx.parser.parse_model(TEXT)
    rng = np.random.default_rng(0)
    inits = {"w": levels.astype(np.int8), "a_zp": np.array(7, np.uint8), "w_zp": np.arange(N, dtype=np.int8) - 4,
             "a_scale": np.array(0.02, np.float32),
             "w_scale": rng.uniform(0.01, 0.02, N).astype(np.float32), "bias": rng.standard_normal(N).astype(np.float32)}
    proto.graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in inits.items())
    return ir.from_proto(proto)


def _run(model: ir.Model, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model_bytes(model), providers=["CPUExecutionProvider"]).run(None, feed)


def _exact(model: ir.Model, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    init = {k: np.asarray(v.const_value.numpy()).astype(np.int64) for k, v in model.graph.initializers.items()}
    y_int = (feed["a"] - init["a_zp"]) @ (init["w"] - init["w_zp"])  # (3) a zero point per column of B
    scales = {k: np.asarray(model.graph.initializers[k].const_value.numpy()) for k in ("a_scale", "w_scale", "bias")}
    return y_int, y_int.astype(np.float32) * (scales["a_scale"] * scales["w_scale"]) + scales["bias"]


@pytest.fixture
def feed() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)  # activation levels near the top: pairs of products reach 2 * 255 * 127
    return {"a": rng.integers(200, 256, (M, K)).astype(np.uint8), "x": rng.uniform(0.5, 1.0, (M, K)).astype(np.float32)}


def test_rewrites_each_integer_matmul_into_float64_arithmetic():
    model = _model(np.full((K, N), 100))
    IntegerAsFloatPass()(model)
    ops = [n.op_type for n in model.graph]
    assert not {"MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"} & set(ops)
    assert ops.count("MatMul") == 3 and ops.count("DynamicQuantizeLinear") == 1
    assert [o.name for o in model.graph.outputs] == ["y_int", "y_float", "y_dyn"]


def test_the_exact_form_gives_the_integer_sums_onnx_defines(feed):
    levels = np.random.default_rng(2).integers(90, 128, (K, N))  # 8-bit levels of one sign: saturating pairs
    model = _model(levels)
    y_int, y_float = _exact(model, feed)
    exact = _model(levels)
    IntegerAsFloatPass()(exact)
    got_int, got_float, got_dyn = _run(exact, feed)
    np.testing.assert_array_equal(got_int, y_int)
    np.testing.assert_allclose(got_float, y_float, rtol=1e-6, atol=1e-4)
    # DynamicQuantizeMatMul: x's own uint8 grid (DynamicQuantizeLinear), then the same exact sums
    kernels = _run(model, feed)
    step = float(np.abs(got_dyn).max()) / 255
    if measured():  # this CPU's u8s8 kernels saturate: they leave the sums the file states
        assert np.abs(kernels[0].astype(np.int64) - y_int).max() > 1000
    else:
        np.testing.assert_array_equal(kernels[0], y_int)
        assert np.abs(kernels[2] - got_dyn).max() <= step


def test_seven_bit_levels_agree_with_the_kernels_everywhere(feed):
    levels = np.random.default_rng(3).integers(-63, 64, (K, N))  # 255 * 63 * 2 < 32767: nothing saturates
    model = _model(levels)
    exact = _model(levels)
    IntegerAsFloatPass()(exact)
    got, want = _run(exact, feed), _run(model, feed)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-3)
