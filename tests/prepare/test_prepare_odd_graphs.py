"""prepare_model and check on graphs that break naive passes: sequences, local functions,
ai.onnx.ml ops, opset 7 Upsample. Outputs must stay identical and nothing may crash."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from ortutil import run_ort

from edgeq.prepare import prepare_model
from edgeq.prepare.quantizability import check

ODD = {
    # a constant sequence: must not be folded into a (wrong) tensor initializer
    "sequence": """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[2,3] x) => (float[4,3] y) <float[2,3] a = {1,2,3,4,5,6}, float[2,3] b = {1,1,1,1,1,1}> {
          s = SequenceConstruct(a, b)
          c = ConcatFromSequence <axis = 0> (s)
          xx = Concat <axis = 0> (x, x)
          y = Add(xx, c)
        }""",
    "function": """
        <ir_version: 8, opset_import: ["" : 13, "local" : 1]>
        g (float[2,3] x) => (float[2,3] y) <float[3,3] w = {1,0,0,0,1,0,0,0,1}> { y = local.Lin(x, w) }
        <domain: "local", opset_import: ["" : 13]>
        Lin (a, b) => (c) { k = Constant <value = float {2.0}> ()  m = MatMul(a, b)  c = Mul(m, k) }""",
    "onnx_ml": """
        <ir_version: 8, opset_import: ["" : 13, "ai.onnx.ml" : 3]>
        g (float[2,3] x) => (float[2,3] y) { n = ai.onnx.ml.Normalizer <norm = "L2"> (x)  y = Relu(n) }""",
    "opset7_upsample": """
        <ir_version: 3, opset_import: ["" : 7]>
        g (float[2,3,4,4] x) => (float[2,3,8,8] y) {
          u = Upsample <scales = [1.0, 1.0, 2.0, 2.0]> (x)
          y = Relu(u)
        }""",
}


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_graph_prepares_without_changing_outputs(name, rng):
    proto = onnx.parser.parse_model(ODD[name])
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    feed = {"x": rng.standard_normal(dims).astype(np.float32)}
    model = ir.from_proto(proto)
    findings = check(model)
    assert all(f.severity != "blocker" for f in findings)

    model, _ = prepare_model(model, data=[feed])

    out = ir.to_proto(model)
    onnx.checker.check_model(out)
    assert out.opset_import[0].version >= 13 or out.opset_import[0].domain != ""
    np.testing.assert_allclose(run_ort(out, feed)[0], run_ort(proto, feed)[0], rtol=1e-6, atol=1e-6)
    if name == "sequence":
        assert {n.op_type for n in out.graph.node} >= {"SequenceConstruct", "ConcatFromSequence"}
        assert not any("s" == f.where for f in findings), findings
