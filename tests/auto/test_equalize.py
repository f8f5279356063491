"""Cross-layer equalization: exact in float, equal weight ranges after, ReLU6 only when safe."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ortutil import op_types, run_ort

from .nets import build

DW_NET = """<ir_version: 8, opset_import: ["" : 17]>
dw_net (float[N,4,12,12] x) => (float[N,6,12,12] y) {
  e = Conv(x, We, Be)
  er = Relu(e)
  d = Conv<group=8, pads=[1,1,1,1]>(er, Wd, Bd)
  dr = Clip(d, lo, hi)
  y = Conv(dr, Wp, Bp)
}"""


def dw_net(seed: int = 0):
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(0, 1.5, (8, 1, 1, 1)))  # depthwise channels of very different ranges
    return build(DW_NET, {
        "We": rng.normal(0, 0.4, (8, 4, 1, 1)), "Be": rng.normal(0, 0.1, 8),
        "Wd": rng.normal(0, 0.3, (8, 1, 3, 3)) * scale, "Bd": rng.normal(0, 0.1, 8),
        "Wp": rng.normal(0, 0.3, (6, 8, 1, 1)), "Bp": rng.normal(0, 0.1, 6),
        "lo": np.array(0.0), "hi": np.array(6.0),
    })


def _x(seed=3):
    return np.random.default_rng(seed).normal(0, 1, (2, 4, 12, 12)).astype(np.float32)


def _ranges(model, name, axis):
    w = model.graph.initializers[name].const_value.numpy()
    w = np.moveaxis(w, axis, 0)
    return np.abs(w).reshape(w.shape[0], -1).max(axis=1)


def test_relu_pair_exact_and_equalized():
    from edgeq.passes.equalize import EqualizeCrossLayerPass

    proto = dw_net()
    model = ir.from_proto(proto)
    before_spread = _ranges(model, "Wd", 0)
    result = EqualizeCrossLayerPass()(model)
    assert result.modified
    assert op_types(model) == ["Conv", "Relu", "Conv", "Clip", "Conv"]  # Clip kept: not known safe
    (ref,), (got,) = run_ort(proto, {"x": _x()}), run_ort(model, {"x": _x()})
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    # expand -> dw: expand's output-channel ranges now equal dw's channel ranges.
    np.testing.assert_allclose(_ranges(model, "We", 0), _ranges(model, "Wd", 0), rtol=1e-5)
    after = _ranges(model, "Wd", 0)
    assert after.max() / after.min() < before_spread.max() / before_spread.min()


def test_relu6_pair_only_when_calibration_says_it_never_clips():
    from edgeq.passes.equalize import EqualizeCrossLayerPass

    proto = dw_net()
    x = _x() * 0.1  # small inputs: the dw output never reaches 6
    d = run_ort(_with_output(proto, "d"), {"x": x})[1]
    assert d.max() < 6.0
    model = ir.from_proto(proto)
    cle = EqualizeCrossLayerPass(clip_as_relu=["d"])
    cle(model)
    assert op_types(model) == ["Conv", "Relu", "Conv", "Relu", "Conv"] and cle.notes
    (ref,), (got,) = run_ort(proto, {"x": x}), run_ort(model, {"x": x})
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(_ranges(model, "Wd_eq" if "Wd_eq" in model.graph.initializers else "Wd", 0),
                               _ranges(model, "Wp", 1), rtol=1e-3)


def test_shared_weight_is_copied_not_overwritten():
    from edgeq.passes.equalize import EqualizeCrossLayerPass

    text = """<ir_version: 8, opset_import: ["" : 17]>
    shared (float[1,4,6,6] x) => (float[1,4,6,6] y, float[1,4,6,6] z) {
      a = Conv(x, W1)
      r = Relu(a)
      y = Conv(r, W2)
      z = Conv(x, W1)
    }"""
    rng = np.random.default_rng(1)
    proto = build(text, {"W1": rng.normal(0, 1, (4, 4, 1, 1)) * [[[[4]]], [[[0.1]]], [[[1]]], [[[2]]]],
                         "W2": rng.normal(0, 1, (4, 4, 1, 1))})
    model = ir.from_proto(proto)
    EqualizeCrossLayerPass()(model)
    x = rng.normal(0, 1, (1, 4, 6, 6)).astype(np.float32)
    ref, got = run_ort(proto, {"x": x}), run_ort(model, {"x": x})
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)
    assert "W1_eq" in model.graph.initializers


def _with_output(proto, name):
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    copy.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return copy
