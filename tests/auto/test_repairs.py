"""SmoothQuant is exact in float and flattens activation channels; bias correction cuts error."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from ortutil import op_types, run_ort

from .nets import build

LN_NET = """<ir_version: 8, opset_import: ["" : 17]>
ln_net (float[N,6,64] x) => (float[N,6,8] y, float[N,6,64] z) {
  n = LayerNormalization<axis=-1>(x, gamma, beta)
  q = MatMul(n, Wq)
  k = MatMul(n, Wk)
  y = Add(q, k)
  h = Gemm<transB=1>(x2, Wg, Bg)
  z = Relu(h)
}"""


def _outlier_gamma(rng):
    gamma = rng.normal(1, 0.1, 64)
    gamma[[3, 41]] = [40.0, -25.0]  # two outlier channels, as in transformers
    return gamma


def ln_net(seed=0):
    text = LN_NET.replace("(float[N,6,64] x)", "(float[N,6,64] x, float[6,64] x2)")
    rng = np.random.default_rng(seed)
    return build(text, {
        "gamma": _outlier_gamma(rng), "beta": rng.normal(0, 0.1, 64),
        "Wq": rng.normal(0, 0.3, (64, 8)), "Wk": rng.normal(0, 0.3, (64, 8)),
        "Wg": rng.normal(0, 0.3, (64, 64)), "Bg": rng.normal(0, 0.1, 64),
    })


def _feeds(seed=2):
    rng = np.random.default_rng(seed)
    x2 = rng.normal(0, 1, (6, 64))
    x2[:, 5] *= 30.0  # an outlier channel in a graph input read by a Gemm
    return {"x": rng.normal(0, 1, (2, 6, 64)).astype(np.float32), "x2": x2.astype(np.float32)}


def _absmax(proto, feeds):
    from edgeq.auto.calib import calibrate_once

    cal = calibrate_once(ir.from_proto(proto), [feeds], progress=False)
    return cal, {name: cal.channel_absmax(name) for name in ("n", "x2")}


def test_smoothquant_exact_in_float_and_flattens_channels():
    from edgeq.passes.smoothquant import SmoothQuantPass

    proto, feeds = ln_net(), _feeds()
    _, absmax = _absmax(proto, feeds)
    model = ir.from_proto(proto)
    sq = SmoothQuantPass(absmax, alpha=0.5)
    assert sq(model).modified
    assert set(sq.smoothed) == {"n", "x2"}
    # LayerNorm output: folded into gamma/beta (nothing added); graph input: a Mul inserted.
    assert op_types(model) == ["Mul", "LayerNormalization", "MatMul", "MatMul", "Add", "Gemm", "Relu"]
    ref, got = run_ort(proto, feeds), run_ort(model, feeds)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * np.abs(r).max())
    _, after = _absmax(ir.to_proto(model), feeds)
    ratio = lambda a: a.max() / np.median(a)  # noqa: E731
    assert ratio(after["n"]) < ratio(absmax["n"]) / 3


def test_smoothquant_improves_int8_fidelity():
    import edgeq
    from edgeq.metrics import sqnr_db
    from edgeq.passes.smoothquant import SmoothQuantPass

    proto, feeds = ln_net(), _feeds()
    calib = [_feeds(s) for s in range(8)]
    _, absmax = _absmax(proto, feeds)
    smoothed = ir.from_proto(proto)
    SmoothQuantPass(absmax)(smoothed)
    # without outlier channels (passes/outliers.py), which take the large channels out of the int8
    # product instead (measured 52.5 dB against SmoothQuant's 45.0 on this net)
    off = edgeq.QuantConfig(outlier_channels=False)
    plain = edgeq.quantize(proto, off, calib, progress=False).model
    smooth = edgeq.quantize(smoothed, off, calib, progress=False).model
    ref = run_ort(proto, feeds)[0]
    assert sqnr_db(ref, run_ort(smooth, feeds)[0]) > sqnr_db(ref, run_ort(plain, feeds)[0]) + 3.0
    outliers = edgeq.quantize(proto, edgeq.QuantConfig(), calib, progress=False).model
    assert sqnr_db(ref, run_ort(outliers, feeds)[0]) > sqnr_db(ref, run_ort(smooth, feeds)[0])


RESIDUAL_NET = """<ir_version: 8, opset_import: ["" : 17]>
residual_net (float[N,6,64] x) => (float[N,6,64] y) {
  n = LayerNormalization<axis=-1>(x, gamma, beta)
  v = MatMul(n, Wv)
  y = Add(n, v)
}"""


def test_smoothquant_partial_keeps_the_residual_reading_the_unscaled_value():
    """A LayerNorm output read by a MatMul and by the residual Add: not smoothed by default (the
    Add would see x / s); with ``partial`` a Mul feeds the MatMul alone, exact in float."""
    from edgeq.passes.smoothquant import SmoothQuantPass

    rng = np.random.default_rng(0)
    proto = build(RESIDUAL_NET, {"gamma": _outlier_gamma(rng), "beta": rng.normal(0, 0.1, 64),
                                 "Wv": rng.normal(0, 0.1, (64, 64))})
    feeds = {"x": _feeds()["x"]}
    from edgeq.auto.calib import calibrate_once

    absmax = {"n": calibrate_once(ir.from_proto(proto), [feeds], progress=False).channel_absmax("n")}
    model = ir.from_proto(proto)
    assert not SmoothQuantPass(absmax)(model).modified  # case 1: the Add is no MatMul
    sq = SmoothQuantPass(absmax, partial=True)
    assert sq(model).modified and set(sq.smoothed) == {"n"}
    assert op_types(model) == ["LayerNormalization", "Mul", "MatMul", "Add"]  # gamma untouched: the Add reads n
    add = next(node for node in model.graph if node.op_type == "Add")
    assert add.inputs[0].name == "n"
    np.testing.assert_allclose(run_ort(model, feeds)[0], run_ort(proto, feeds)[0], rtol=1e-4, atol=1e-4)


BIAS_NET = """<ir_version: 8, opset_import: ["" : 17]>
bias_net (float[N,8,10,10] x) => (float[N,16,10,10] y) {
  y = Conv<pads=[1,1,1,1]>(x, W, B)
}"""


def test_bias_correction_reduces_output_error():
    import edgeq
    from edgeq.auto.calib import calibrate_once
    from edgeq.config import QuantConfig
    from edgeq.metrics import sqnr_db
    from edgeq.passes.bias_correction import BiasCorrectionPass

    rng = np.random.default_rng(0)
    scale = np.exp(np.linspace(-3, 1, 16)).reshape(16, 1, 1, 1)  # per-tensor int8 crushes small channels
    proto = build(BIAS_NET, {"W": rng.normal(0.05, 0.3, (16, 8, 3, 3)) * scale, "B": rng.normal(0, 0.1, 16)})
    data = [{"x": (3.0 + rng.normal(0, 0.5, (1, 8, 10, 10))).astype(np.float32)} for _ in range(16)]
    test = {"x": (3.0 + rng.normal(0, 0.5, (4, 8, 10, 10))).astype(np.float32)}
    config = QuantConfig(granularity="per-tensor")
    cal = calibrate_once(ir.from_proto(proto), data, config, progress=False)
    corrected = ir.from_proto(proto)
    bc = BiasCorrectionPass({"x": cal.channel_mean("x")}, per_channel=False)
    assert bc(corrected).modified and list(bc.corrected) == [corrected.graph.node(0).name]
    ref = run_ort(proto, test)[0]
    plain = run_ort(edgeq.quantize(proto, config, data, progress=False).model, test)[0]
    fixed = run_ort(edgeq.quantize(corrected, config, data, progress=False).model, test)[0]
    before, after = sqnr_db(ref, plain), sqnr_db(ref, fixed)
    assert after > before + 1.0, (before, after)
    # the mean error per output channel shrinks
    assert np.abs((fixed - ref).mean(axis=(0, 2, 3))).max() < 0.5 * np.abs((plain - ref).mean(axis=(0, 2, 3))).max()


def test_bias_correction_adds_a_bias_to_a_conv_without_one():
    """A Conv with no bias input (TF/Paddle exports) gets one, holding just the correction."""
    from edgeq.auto.calib import calibrate_once
    from edgeq.config import QuantConfig
    from edgeq.passes.bias_correction import BiasCorrectionPass

    rng = np.random.default_rng(1)
    text = BIAS_NET.replace("Conv<pads=[1,1,1,1]>(x, W, B)", "Conv<pads=[1,1,1,1]>(x, W)")
    scale = np.exp(np.linspace(-3, 1, 16)).reshape(16, 1, 1, 1)
    proto = build(text, {"W": rng.normal(0.05, 0.3, (16, 8, 3, 3)) * scale})
    data = [{"x": (3.0 + rng.normal(0, 0.5, (1, 8, 10, 10))).astype(np.float32)} for _ in range(8)]
    cal = calibrate_once(ir.from_proto(proto), data, QuantConfig(granularity="per-tensor"), progress=False)
    model = ir.from_proto(proto)
    assert BiasCorrectionPass({"x": cal.channel_mean("x")}, per_channel=False)(model).modified
    conv = model.graph.node(0)
    assert len(conv.inputs) == 3 and conv.inputs[2].const_value.numpy().shape == (16,)
    # float outputs move only by the (small) correction itself
    delta = run_ort(model, data[0])[0] - run_ort(proto, data[0])[0]
    np.testing.assert_allclose(delta.mean(axis=(0, 2, 3)), conv.inputs[2].const_value.numpy(), atol=1e-4)


def test_repaired_copies_are_frozen_so_variants_share_their_weights():
    """A bias-corrected copy is the base of a build per configuration: frozen, ``copy_model``
    clones it (weights shared, not copied through protobuf) and each weight is quantized once."""
    from edgeq.auto.calib import calibrate_once
    from edgeq.auto.repairs import correct_bias
    from edgeq.config import QuantConfig
    from edgeq.graph import _frozen, copy_model, freeze_constants

    rng = np.random.default_rng(0)
    proto = build(BIAS_NET, {"W": rng.normal(0.05, 0.3, (16, 8, 3, 3)), "B": rng.normal(0, 0.1, 16)})
    data = [{"x": (3.0 + rng.normal(0, 0.5, (1, 8, 10, 10))).astype(np.float32)} for _ in range(4)]
    model = ir.from_proto(proto)
    freeze_constants(model)
    cal = calibrate_once(model, data, QuantConfig(), progress=False)
    corrected, _ = correct_bias(model, cal, QuantConfig())
    assert corrected is not None and _frozen(corrected)
    clone = copy_model(corrected)
    weight = lambda m: next(iter(m.graph)).inputs[1].const_value  # noqa: E731
    assert weight(clone) is weight(corrected) is weight(model)
