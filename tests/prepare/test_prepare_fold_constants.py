"""FoldConstantsPass and RemoveDeadCodePass: all-constant chains fold; blow-ups and DQ stay."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.prepare.fold_constants import FoldConstantsPass
from edgeq.prepare.infer_shapes import InferShapesPass
from edgeq.prepare.remove_dead_code import RemoveDeadCodePass
from ortutil import op_types, run_ort


def test_weight_chain_and_static_shape_fold(rng):
    proto = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[2,4] x) => (float[2,3] y)
          <double[3,4] w = {1,2,3,4,5,6,7,8,9,10,11,12}, int64[2] flat = {4, 3}> {
          wt = Transpose <perm = [1, 0]> (w)
          wc = Cast <to = 1> (wt)
          wr = Reshape(wc, flat)
          m = MatMul(x, wr)
          s = Shape(m)
          y = Reshape(m, s)
        }
        """
    )
    x = rng.standard_normal((2, 4)).astype(np.float32)
    model = ir.from_proto(proto)
    InferShapesPass()(model)
    p = FoldConstantsPass()
    p(model)
    RemoveDeadCodePass()(model)
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    assert op_types(out) == ["MatMul", "Reshape"]  # cases 1 and 2
    assert sorted(i.name for i in out.graph.initializer) == ["s", "wr"]
    assert out.graph.initializer[0].data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64)
    np.testing.assert_allclose(run_ort(out, {"x": x})[0], run_ort(proto, {"x": x})[0], rtol=1e-6)
    assert p.notes == ["4 constant node(s) folded into initializers"]


def test_blow_up_dequantize_and_overridable_inputs_do_not_fold():
    proto = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[2] x, float[2] o) => (float[512,512] big, float[2] dq, float[2] y)
          <int64[2] shape = {512, 512}, int8[2] q = {1, 2}, float s = {0.5}, float[2] o = {1.0, 2.0}> {
          big = ConstantOfShape <value = float[1] {1.0}> (shape)
          dq = DequantizeLinear(q, s)
          r = Relu(o)
          y = Add(r, x)
        }
        """
    )
    model = ir.from_proto(proto)
    assert not FoldConstantsPass()(model).modified  # case 3 (o is an input: callers may override it)
    big = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[512,512] x) => (float[512,512] y) <int64[2] shape = {512, 512}> {
          c = ConstantOfShape <value = float[1] {1.0}> (shape)
          y = Add(x, c)
        }
        """
    )
    model = ir.from_proto(big)
    assert not FoldConstantsPass()(model).modified  # 1 MiB from 16 bytes: a blow-up


def test_dead_code_in_main_graph_and_subgraphs():
    proto = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (bool c, float[2] x) => (float[2] y) <float[2] unused = {1.0, 2.0}> {
          dead = Relu(x)
          y = If (c) <
            then_branch = t () => (float[2] o) <float[2] u2 = {3.0, 4.0}> { d2 = Sigmoid(x)  o = Relu(x) },
            else_branch = e () => (float[2] o) { o = Neg(x) }
          >
        }
        """
    )
    model = ir.from_proto(proto)
    p = RemoveDeadCodePass()
    p(model)
    assert op_types(model) == ["If"]
    then = model.graph.node(0).attributes["then_branch"].as_graph()
    assert [n.op_type for n in then] == ["Relu"] and not then.initializers
    assert not model.graph.initializers
    assert p.notes == ["removed 2 dead node(s) and 2 unused initializer(s)"]
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
