"""Gram matrices ``X^T X`` of layer inputs (GPTQ's Hessians), from a real onnxruntime session:
equal to the float64 sum over every sample's rows, however the rows are grouped for speed."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from edgeq.calibrate import grams


def _model() -> ir.Model:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(16, 4)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("MatMul", ["r", "w"], ["y"], name="mm")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "t", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "t", 4])], [w])
    return ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_sum_over_samples_in_float64(monkeypatch):
    rng = np.random.default_rng(1)
    feeds = [{"x": (3.0 * rng.normal(size=(1, int(t), 16)) + 1.0).astype(np.float32)} for t in rng.integers(20, 90, 30)]
    x = np.concatenate([f["x"][0] for f in feeds]).astype(np.float64)
    r = np.maximum(x, 0.0)
    for rows in (1024, 100, 1):  # the default, a flush every few samples, one per sample
        monkeypatch.setattr(grams, "ROWS", rows)
        got = grams.gram_matrices(_model(), feeds, ["r", "x"])
        assert set(got) == {"r", "x"} and got["r"].dtype == np.float64
        np.testing.assert_allclose(got["x"], x.T @ x, rtol=1e-5)
        np.testing.assert_allclose(got["r"], r.T @ r, rtol=1e-5)
