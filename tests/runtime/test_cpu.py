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


def _qdq_matmul(tmp_path, level: int, act_zp_dtype=np.uint8, name: str = "m.onnx"):
    """x -> Q/DQ (uint8 or int8) -> MatMul with an int8 weight DQ whose largest level is ``level``."""
    w = np.full((64, 16), level, np.int8)
    inits = [numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(np.array(0.01, np.float32), "w_s"),
             numpy_helper.from_array(np.array(0, np.int8), "w_zp"), numpy_helper.from_array(np.array(0.02, np.float32), "x_s"),
             numpy_helper.from_array(np.array(0, act_zp_dtype), "x_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["x_q"]),
             helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_zp"], ["x_dq"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w_dq"]),
             helper.make_node("MatMul", ["x_dq", "w_dq"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, path)
    return model, path


def test_wide_int8_weights_are_those_u8s8_kernels_read(tmp_path):
    assert cpu.wide_int8_weights(_qdq_matmul(tmp_path, 127)[0]) == ["w_q"]
    assert cpu.wide_int8_weights(_qdq_matmul(tmp_path, 63)[0]) == []  # 7 bits: never saturates
    assert cpu.wide_int8_weights(_qdq_matmul(tmp_path, 127, np.int8)[0]) == []  # s8s8: no such kernel


def test_a_session_warns_where_this_cpu_saturates_the_models_weights(tmp_path, monkeypatch):
    from edgeq.runtime import Session

    _, wide = _qdq_matmul(tmp_path, 127, name="wide.onnx")
    _, narrow = _qdq_matmul(tmp_path, 63, name="narrow.onnx")
    monkeypatch.setenv(cpu.ENV, "1")
    x = {"x": np.ones((4, 64), np.float32)}
    sess = Session(wide)
    sess.run(x)
    assert len(sess.warnings) == 1 and "--reduce-range" in sess.warnings[0] and "wide.onnx" in sess.warnings[0]
    quiet = Session(narrow)
    quiet.run(x)
    assert quiet.warnings == []
    monkeypatch.setenv(cpu.ENV, "0")
    fine = Session(wide)
    fine.run(x)
    assert fine.warnings == []


def test_bench_carries_the_warning_back_from_its_worker_process(tmp_path, monkeypatch):
    from edgeq.runtime.bench import bench

    _, wide = _qdq_matmul(tmp_path, 127, name="wide.onnx")
    monkeypatch.setenv(cpu.ENV, "1")  # the worker process inherits it
    (result,) = bench([wide], batches=[4], iters=3, warmup=1)
    assert len(result.warnings) == 1 and "saturates" in result.warnings[0]
