"""OpsetUpgradePass: upgrade to 13 by default, never downgrade, clear error naming the operator."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from edgeq.errors import UnsupportedError
from edgeq.prepare.opset_upgrade import OpsetUpgradePass
from ortutil import run_ort


def _big_weight_model():
    # w must exceed the detach threshold (4 KiB) to exercise case 2: 64x64 floats
    proto = onnx.parser.parse_model(
        """
        <ir_version: 6, opset_import: ["" : 11]>
        g (float[1,64,1,1] x) => (float[1,64] y) {
          s = Squeeze <axes = [2, 3]> (x)
          y = MatMul(s, w)
        }
        """
    )
    w = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 1000
    proto.graph.initializer.append(onnx.numpy_helper.from_array(w, "w"))
    return proto


def test_upgrade_11_to_13_keeps_numerics_and_large_weights(rng):
    proto = _big_weight_model()
    x = rng.standard_normal((1, 64, 1, 1)).astype(np.float32)
    model = ir.from_proto(proto)
    weight = model.graph.initializers["w"].const_value

    p = OpsetUpgradePass()
    assert p(model).modified

    assert model.opset_imports[""] == 13
    squeeze = next(n for n in model.graph if n.op_type == "Squeeze")
    assert "axes" not in squeeze.attributes and len(squeeze.inputs) == 2  # axes became an input
    assert model.graph.initializers["w"].const_value is weight  # case 2: the same tensor, not a copy
    assert [v.name for v in model.graph.inputs] == ["x"]
    out = ir.to_proto(model)
    onnx.checker.check_model(out, full_check=True)
    np.testing.assert_array_equal(run_ort(out, {"x": x})[0], run_ort(proto, {"x": x})[0])
    assert p.notes == ["opset upgraded from 11 to 13"]


def test_upgrade_to_21_for_int4():
    model = ir.from_proto(_big_weight_model())
    OpsetUpgradePass(21)(model)
    assert model.opset_imports[""] == 21
    onnx.checker.check_model(ir.to_proto(model), full_check=True)


def test_never_downgrades():
    proto = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 17]> g (float[2] x) => (float[2] y) { y = Relu(x) }'
    )
    model = ir.from_proto(proto)
    p = OpsetUpgradePass(13)
    assert not p(model).modified
    assert model.opset_imports[""] == 17
    assert "never downgrades" in p.notes[0]


def test_converter_failure_names_the_operator():
    proto = onnx.parser.parse_model(
        '<ir_version: 6, opset_import: ["" : 11]> g (float[2] x) => (float[2] y) { y = FooBar(x) }'
    )
    with pytest.raises(UnsupportedError, match=r"operator FooBar.*opset >= 13"):
        OpsetUpgradePass()(ir.from_proto(proto))


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_upsample_keeps_its_asymmetric_meaning_as_resize(rng, mode):
    """Opset 9 Upsample -> Resize-13 states asymmetric coordinates (and floor for nearest), not
    the default half_pixel: same values, and onnxruntime's fast kernel path."""
    proto = onnx.parser.parse_model(
        f"""
        <ir_version: 4, opset_import: ["" : 9]>
        g (float[1,2,5,7] x) => (float[1,2,15,14] y) {{
          s = Constant <value = float[4] {{1.0, 1.0, 3.0, 2.0}}> ()
          y = Upsample <mode = "{mode}"> (x, s)
        }}
        """
    )
    model = ir.from_proto(proto)
    OpsetUpgradePass()(model)
    resize = next(n for n in model.graph if n.op_type == "Resize")
    assert resize.attributes["coordinate_transformation_mode"].as_string() == "asymmetric"
    if mode == "nearest":
        assert resize.attributes["nearest_mode"].as_string() == "floor"
    x = rng.normal(size=(1, 2, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(run_ort(ir.to_proto(model), {"x": x})[0], run_ort(proto, {"x": x})[0], rtol=1e-6, atol=1e-6)
