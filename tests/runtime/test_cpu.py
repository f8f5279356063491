"""runtime/cpu.py: the measurement of whether this CPU's onnxruntime saturates u8s8 products."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeq.runtime import cpu


def _matmul_integer(weight: int, a: int = 255, k: int = 64) -> int:
    """The first element of a u8s8 MatMulInteger, all A elements ``a``, all weights ``weight``."""
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [4, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [4, 16])],
        [numpy_helper.from_array(np.full((k, 16), weight, np.int8), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return int(sess.run(None, {"a": np.full((4, k), a, np.uint8)})[0][0, 0])


def test_the_measurement_matches_what_the_kernel_does():
    """Whatever this CPU is: 8-bit weights are exact iff the measurement says no saturation, and
    7-bit weights (what edgeq then uses) are exact on every CPU."""
    exact_8bit = _matmul_integer(127) == 255 * 127 * 64
    assert cpu.measured() == (not exact_8bit)
    assert _matmul_integer(63) == 255 * 63 * 64
    assert _matmul_integer(-63) == -255 * 63 * 64


def test_the_override_wins_and_the_measurement_is_cached(monkeypatch):
    monkeypatch.setenv(cpu.ENV, "0")
    assert cpu.int8_saturates() is False
    monkeypatch.setenv(cpu.ENV, "1")
    assert cpu.int8_saturates() is True
    monkeypatch.delenv(cpu.ENV)
    assert cpu.int8_saturates() == cpu.measured()
    assert cpu.measured.cache_info().currsize == 1
