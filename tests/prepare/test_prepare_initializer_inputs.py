"""InitializersNotInputsPass: IR<4 style initializers-as-inputs become constants, so BN folds."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

from edgeq.prepare import prepare_model
from edgeq.prepare.initializers_not_inputs import InitializersNotInputsPass
from ortutil import op_types, run_ort

OLD = """
<ir_version: 3, opset_import: ["" : 9]>
g (float[1,2,3,3] x, float[2,2,1,1] w, float[2] s, float[2] b, float[2] m, float[2] v) => (float[1,2,3,3] y)
  <float[2,2,1,1] w = {1.0, 0.5, -0.5, 2.0}, float[2] s = {1.5, 0.5}, float[2] b = {0.1, -0.2},
   float[2] m = {0.3, -0.1}, float[2] v = {2.0, 0.5}> {
  c = Conv(x, w)
  y = BatchNormalization(c, s, b, m, v)
}
"""


def test_initializers_leave_the_inputs():
    model = ir.from_proto(onnx.parser.parse_model(OLD))
    p = InitializersNotInputsPass()
    assert p(model).modified
    assert [v.name for v in model.graph.inputs] == ["x"]
    assert model.ir_version >= 4
    assert "5 initializer(s)" in p.notes[0]


def test_old_model_prepares_with_bn_folded(rng):
    proto = onnx.parser.parse_model(OLD)
    x = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
    model, _ = prepare_model(ir.from_proto(proto))
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    assert op_types(out) == ["Conv"]
    np.testing.assert_allclose(run_ort(out, {"x": x})[0], run_ort(proto, {"x": x})[0], rtol=1e-5, atol=1e-6)
