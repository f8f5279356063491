"""prepare_model and check on graphs that break naive passes: sequences, local functions,
ai.onnx.ml ops, opset 7 Upsample. Outputs must stay identical and nothing may crash."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from edgeq.prepare import prepare_model
from edgeq.prepare.quantizability import check
from ortutil import run_ort

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
    "scan": """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[4,3] x) => (float[3] final, float[4,3] ys) <float[3] init = {0.0, 0.0, 0.0}> {
          final, ys = Scan <num_scan_inputs = 1,
            body = b (float[3] acc, float[3] xi) => (float[3] acc_out, float[3] yi) {
              w = Constant <value = float[3,3] {1,2,3,4,5,6,7,8,9}> ()
              wi = Identity(w)
              m = MatMul(xi, wi)
              acc_out = Add(acc, m)
              yi = Identity(acc_out)
            }> (init, x)
        }""",
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
    if name == "scan":
        body = model.graph.node(0).attributes["body"].as_graph()
        assert [n.op_type for n in body] == ["MatMul", "Add", "Identity"]  # yi = Identity(output) stays
        assert "w" in body.initializers
    if name == "sequence":
        assert {n.op_type for n in out.graph.node} >= {"SequenceConstruct", "ConcatFromSequence"}
        assert not any("s" == f.where for f in findings), findings


def test_int64_and_bool_inputs_with_fallback_inference(rng):
    proto = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13, "com.microsoft" : 1]>
        g (int64[B,L] ids, bool[B,L] mask) => (float[B,L,4] y) <float[10,4] emb = {
            0,1,2,3, 4,5,6,7, 8,9,0,1, 2,3,4,5, 6,7,8,9, 0,1,2,3, 4,5,6,7, 8,9,0,1, 2,3,4,5, 6,7,8,9}> {
          e = Gather(emb, ids)
          g = com.microsoft.Gelu(e)
          m = Unsqueeze(mask, axes)
          z = Constant <value = float {0.0}> ()
          y = Where(m, g, z)
        }
        """
    )
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.array([2], np.int64), "axes"))
    feeds = [
        {"ids": rng.integers(0, 10, (2, n)), "mask": rng.random((2, n)) > 0.3}
        for n in (5, 7)
    ]
    model, notes = prepare_model(ir.from_proto(proto), data=feeds)
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    gelu = next(n for n in model.graph if n.op_type == "Gelu").outputs[0]
    assert gelu.dtype == ir.DataType.FLOAT and len(gelu.shape) == 3 and gelu.shape[2] == 4
    assert [v.name for v in model.graph.inputs] == ["ids", "mask"]
    for feed in feeds:
        np.testing.assert_array_equal(run_ort(out, feed)[0], run_ort(proto, feed)[0])
