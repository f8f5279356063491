"""EliminateIdentityPass: Identity/Dropout removal with stable graph output names."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.prepare.eliminate_identity import EliminateIdentityPass
from ortutil import op_types, run_ort


def _run(text: str):
    proto = onnx.parser.parse_model(text)
    model = ir.from_proto(proto)
    p = EliminateIdentityPass()
    p(model)
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    return proto, model, out, p


def test_identity_and_dropout_chain_removed_output_name_kept(rng):
    proto, model, out, p = _run(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[2,3] x) => (float[2,3] y) {
          a = Relu(x)
          b = Identity(a)
          c = Dropout(b)
          d = Sigmoid(c)
          y = Identity(d)
        }
        """
    )
    assert op_types(out) == ["Relu", "Sigmoid"]  # cases 1 and 2
    assert [o.name for o in out.graph.output] == ["y"]
    x = rng.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(run_ort(out, {"x": x})[0], run_ort(proto, {"x": x})[0])
    assert sorted(p.notes) == ["1 Dropout node(s) removed", "2 Identity node(s) removed"]


def test_identity_kept_between_input_and_output_or_two_outputs():
    _, _, out, _ = _run(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[2] x) => (float[2] y, float[2] a, float[2] z) {
          y = Identity(x)
          a = Relu(x)
          z = Identity(a)
        }
        """
    )
    # case 3: x is a graph input; a is itself a graph output (renaming it would lose "a")
    assert op_types(out) == ["Identity", "Relu", "Identity"]
    assert [o.name for o in out.graph.output] == ["y", "a", "z"]


def test_dropout_with_used_mask_or_training_stays():
    _, _, out, _ = _run(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[2] x, bool t) => (float[2] y, bool[2] m, float[2] z) {
          y, m = Dropout(x)
          r = Constant <value = float {0.5}> ()
          z = Dropout(x, r, t)
        }
        """
    )
    assert op_types(out) == ["Dropout", "Constant", "Dropout"]  # case 4


def test_identity_in_loop_body_removed():
    _, model, out, _ = _run(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[2] x) => (float[2] y) <int64 n = {2}, bool go = {1}> {
          y = Loop (n, go, x) <
            body = b (int64 i, bool c, float[2] s) => (bool co, float[2] so) {
              r = Relu(s)
              t = Identity(r)
              so = Sigmoid(t)
              co = Identity(c)
            }
          >
        }
        """
    )
    body = model.graph.node(0).attributes["body"].as_graph()
    assert [n.op_type for n in body] == ["Relu", "Sigmoid", "Identity"]
