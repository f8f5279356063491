"""InferShapesPass: ONNX inference first, then running the model on data for what stays unknown."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.prepare.infer_shapes import InferShapesPass, unknown_values

# com.microsoft.Gelu runs on onnxruntime but ONNX shape inference knows nothing of it.
CUSTOM = """
<ir_version: 8, opset_import: ["" : 13, "com.microsoft" : 1]>
g (float[N,L,4] x) => (float[N,L,4] y) {
  a = Relu(x)
  b = com.microsoft.Gelu(a)
  c = Sigmoid(b)
  y = Mul(c, a)
}
"""


def test_onnx_inference_fills_static_graph():
    model = ir.from_onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[2,3] x) => (float[2,3] y) { a = Relu(x)  b = Transpose(a)  y = Transpose(b) }
        """
    )
    InferShapesPass()(model)
    assert unknown_values(model.graph) == []
    assert list(model.graph.node(1).outputs[0].shape) == [3, 2]


def test_fallback_runs_the_model_and_marks_varying_dims_symbolic(rng):
    model = ir.from_proto(onnx.parser.parse_model(CUSTOM))
    data = [
        {"x": rng.standard_normal((2, 5, 4)).astype(np.float32)},
        {"x": rng.standard_normal((2, 7, 4)).astype(np.float32)},
    ]
    p = InferShapesPass(data)
    p(model)
    assert unknown_values(model.graph) == []
    b = model.graph.node(1).outputs[0]
    assert b.dtype == ir.DataType.FLOAT
    assert b.shape[2] == 4 and not isinstance(b.shape[1], int)  # case 2: L varies
    assert not isinstance(b.shape[0], int)  # N is 2 in both feeds, but dynamic in the model
    assert [v.name for v in model.graph.outputs] == ["y"]  # extra outputs removed again
    assert any("by running the model on 2 feed(s)" in n for n in p.notes)


def test_without_data_unknown_values_are_noted():
    model = ir.from_proto(onnx.parser.parse_model(CUSTOM))
    p = InferShapesPass()
    p(model)
    assert unknown_values(model.graph)
    assert "pass calibration data" in p.notes[0]  # case 4


def test_fallback_keeps_batch_symbolic_when_every_feed_has_batch_one(rng):
    model = ir.from_proto(onnx.parser.parse_model(CUSTOM))
    data = [{"x": rng.standard_normal((1, 5, 4)).astype(np.float32)} for _ in range(3)]
    InferShapesPass(data)(model)
    b = model.graph.node(1).outputs[0]
    assert not isinstance(b.shape[0], int) and not isinstance(b.shape[1], int)  # N and L
    assert b.shape[2] == 4  # a fixed dim of the model stays fixed
