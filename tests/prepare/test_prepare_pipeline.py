"""prepare_model end to end on small graphs from ONNX text: structure changes, same numerics."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.prepare import prepare_model
from ortutil import op_types, run_ort

OPSET11_CONV_BN = """
<ir_version: 6, opset_import: ["" : 11]>
g (float[N,3,8,8] x) => (float[N,4,4,4] z) {
  w = Constant <value = float[4,3,1,1] {1,2,3,4,5,6,7,8,9,10,11,12}> ()
  wi = Identity(w)
  sc = Constant <value = float[4] {1,2,3,4}> ()
  bb = Constant <value = float[4] {0.1,0.2,0.3,0.4}> ()
  mn = Constant <value = float[4] {0.5,0.2,-0.3,0.4}> ()
  vr = Constant <value = float[4] {1.5,0.2,0.3,0.4}> ()
  y0 = Conv(x, wi)
  y1 = BatchNormalization(y0, sc, bb, mn, vr)
  yd = Dropout(y1)
  y = Relu(yd)
  z = MaxPool <kernel_shape=[2,2], strides=[2,2]> (y)
}
"""


def test_prepare_opset11_constant_weights_bn(rng):
    proto = onnx.parser.parse_model(OPSET11_CONV_BN)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    (expected,) = run_ort(proto, {"x": x})

    given = ir.from_proto(proto)
    model, notes = prepare_model(given)

    assert model is given  # the contract: the same model, mutated
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    assert op_types(out) == ["Conv", "Relu", "MaxPool"]
    assert out.opset_import[0].version == 13
    assert [o.name for o in out.graph.output] == ["z"]
    assert any("BatchNormalization" in n for n in notes)
    assert any("Constant" in n for n in notes)
    (got,) = run_ort(out, {"x": x})
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_prepare_keeps_higher_opset_and_notes_it():
    proto = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2,3] x) => (float[2,3] y) { y = Relu(x) }
        """
    )
    model, notes = prepare_model(ir.from_proto(proto), target_opset=13)
    assert model.opset_imports[""] == 17
    assert any("never downgrades" in n for n in notes)


def test_prepare_notes_fp16_model():
    proto = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float16[2,3] x) => (float16[2,3] y) { y = Relu(x) }
        """
    )
    _, notes = prepare_model(ir.from_proto(proto))
    assert any("fp32" in n for n in notes)
