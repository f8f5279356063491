"""ConstantsToInitializersPass: every Constant form becomes an initializer, in subgraphs too."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.prepare.constants_to_initializers import ConstantsToInitializersPass
from ortutil import op_types, run_ort

FORMS = """
<ir_version: 8, opset_import: ["" : 13]>
g (float[2,3] x) => (float[2,3] y, float[3] kept) {
  w = Constant <value = float[3,3] {1,0,0, 0,2,0, 0,0,3}> ()
  s = Constant <value_float = 0.5> ()
  b = Constant <value_floats = [1.0, 2.0, 3.0]> ()
  shape = Constant <value_ints = [2, 3]> ()
  wi = Identity(w)
  m = MatMul(x, wi)
  ms = Mul(m, s)
  a = Add(ms, b)
  y = Reshape(a, shape)
  kept = Constant <value_floats = [7.0, 8.0, 9.0]> ()
}
"""


def test_constant_forms_become_initializers(rng):
    proto = onnx.parser.parse_model(FORMS)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    expected = run_ort(proto, {"x": x})
    model = ir.from_proto(proto)

    p = ConstantsToInitializersPass()
    assert p(model).modified

    # case 1 for value/value_float/value_floats/value_ints; case 2 keeps the graph output
    assert op_types(model) == ["MatMul", "Mul", "Add", "Reshape", "Constant"]
    inits = model.graph.initializers
    assert set(inits) == {"w", "s", "b", "shape"}
    assert inits["s"].dtype == ir.DataType.FLOAT and inits["shape"].dtype == ir.DataType.INT64
    # case 3: MatMul reads the initializer itself, not an Identity of it
    matmul = next(n for n in model.graph if n.op_type == "MatMul")
    assert matmul.inputs[1] is inits["w"]
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    for got, want in zip(run_ort(out, {"x": x}), expected):
        np.testing.assert_array_equal(got, want)
    assert "4 Constant node(s) became initializers (their weights are quantizable)" in p.notes
    assert "1 Identity node(s) of initializers removed" in p.notes


def test_constants_in_subgraph_become_subgraph_initializers(rng):
    proto = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (bool c, float[2,2] x) => (float[2,2] y) {
          y = If (c) <
            then_branch = t () => (float[2,2] o) {
              w = Constant <value = float[2,2] {1,2,3,4}> ()
              o = MatMul(x, w)
            },
            else_branch = e () => (float[2,2] o) { o = Relu(x) }
          >
        }
        """
    )
    x = rng.standard_normal((2, 2)).astype(np.float32)
    model = ir.from_proto(proto)
    ConstantsToInitializersPass()(model)
    then = model.graph.node(0).attributes["then_branch"].as_graph()
    assert [n.op_type for n in then] == ["MatMul"]
    assert "w" in then.initializers
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    for flag in (True, False):
        feed = {"c": np.array(flag), "x": x}
        np.testing.assert_array_equal(run_ort(out, feed)[0], run_ort(proto, feed)[0])


def test_identity_of_graph_input_or_output_stays():
    proto = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[2] x) => (float[2] y, float[2] wo) <float[2] w = {1.0, 2.0}> {
          y = Identity(x)
          wo = Identity(w)
        }
        """
    )
    model = ir.from_proto(proto)
    assert not ConstantsToInitializersPass()(model).modified
    assert op_types(model) == ["Identity", "Identity"]
