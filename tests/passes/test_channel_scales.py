"""ChannelScalesPass: a Conv whose int8 output only float ops read gets per-channel output steps.

The nets below have BatchNorm-folded-like Convs whose output channels span ranges 100x apart,
followed by hard-swish (no int8 kernel: a float reader) or by another Conv (an int8 reader).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgeq
from edgeq.metrics import sqnr_db as sqnr
from edgeq.passes.channel_scales import HEADROOM, MAX_GAIN, channel_gains
from ortutil import run_ort


def _conv(name: str, x: str, out: str, cin: int, cout: int, rng, spread: float, amplify: float,
          k: int = 3) -> tuple:
    """Output channel c scaled down by up to ``spread`` (folded BN gammas); input channel i scaled up
    by up to ``amplify`` (this layer leans on the narrow channels of the previous one)."""
    w = rng.normal(size=(cout, cin, k, k)) / np.sqrt(cin * k * k)
    w = w * np.geomspace(1.0, 1.0 / spread, cout)[:, None, None, None] * np.geomspace(1.0, amplify, cin)[:, None, None]
    w = w.astype(np.float32)
    b = ((0.1 * rng.normal(size=cout)) * np.geomspace(1.0, 1.0 / spread, cout)).astype(np.float32)
    node = helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [out], name=name, pads=[k // 2] * 4)
    return node, [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]


def hardswish_net(seed: int = 0, spread: float = 100.0) -> onnx.ModelProto:
    """x -> Conv(spread) -> HardSwish -> Conv(spread) -> HardSwish -> y, and a side branch
    x -> Conv(spread) -> Conv -> z whose first Conv has an int8 reader."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    for spec in (("c1", "x", "a1", 8, 32, spread, 1.0), ("c2", "h1", "a2", 32, 32, spread, 1.0),
                 ("s1", "x", "t1", 8, 16, spread, 1.0), ("s2", "t1", "z", 16, 8, 1.0, 1.0)):
        node, init = _conv(*spec[:5], rng, *spec[5:])
        nodes.append(node)
        inits += init
    nodes.insert(1, helper.make_node("HardSwish", ["a1"], ["h1"], name="hs1"))
    nodes.insert(3, helper.make_node("HardSwish", ["a2"], ["y"], name="hs2"))
    graph = helper.make_graph(
        nodes, "hs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 16, 16]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(1, 8, 16, 16)).astype(np.float32)} for _ in range(n)]


def _quantize(model, on: bool, fmt: str = "qdq"):
    config = edgeq.QuantConfig(mode="static", channel_scales=on, format=fmt)
    return edgeq.quantize(model, config, data=feeds(16, 0), progress=False)


def _min_sqnr(model: onnx.ModelProto, result, samples) -> dict[str, float]:
    """Each output's SQNR of its worst channel: a narrow channel is a feature the next layers read
    at its own scale (a folded BatchNorm), however little it weighs in the whole tensor's SQNR."""
    ref = [run_ort(model, f) for f in samples]
    got = [run_ort(result.model, f) for f in samples]
    out = {}
    for i, name in enumerate(("y", "z")):
        r, g = np.stack([x[i] for x in ref]), np.stack([x[i] for x in got])
        out[name] = min(float(sqnr(r[:, :, c], g[:, :, c])) for c in range(r.shape[2]))
    return out


def test_float_readers_get_per_channel_steps_and_fidelity_rises():
    model = hardswish_net()
    on, off = _quantize(model, True), _quantize(model, False)
    proto = ir.to_proto(on.model)
    muls = [n for n in proto.graph.node if n.op_type == "Mul" and n.name.endswith("_channels")]
    scaled = {n.input[0] for n in muls}
    assert len(muls) == 2, [n.name for n in muls]  # c1 and c2 (hard-swish readers); not s1 (Conv reader), not s2 (output)
    assert all(name.startswith(("a1", "a2")) for name in scaled), scaled
    unseen = feeds(8, 1)
    with_steps, without = _min_sqnr(model, on, unseen), _min_sqnr(model, off, unseen)
    assert with_steps["y"] >= without["y"] + 6.0, (with_steps, without)  # narrow channels: ~log2(k) more bits
    assert with_steps["y"] >= 25.0, with_steps
    assert abs(with_steps["z"] - without["z"]) < 0.5  # the int8-read branch is untouched
    assert any("per-channel steps" in note for note in on.report.get("notes", [])) or muls


def test_int8_weights_and_biases_are_unchanged_only_their_scales():
    model = hardswish_net()
    on, off = ir.to_proto(_quantize(model, True).model), ir.to_proto(_quantize(model, False).model)
    arrays = lambda m, kind: {i.name: numpy_helper.to_array(i) for i in m.graph.initializer  # noqa: E731
                              if numpy_helper.to_array(i).dtype == kind}
    for kind in (np.int8, np.int32):
        a, b = arrays(on, kind), arrays(off, kind)
        assert sorted(v.tobytes() for v in a.values()) == sorted(v.tobytes() for v in b.values())


def test_onnxruntime_still_fuses_qlinearconv(tmp_path):
    import onnxruntime as ort

    result = _quantize(hardswish_net(), True)
    path = tmp_path / "q.onnx"
    result.save(str(path))
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("QLinearConv") == 4, ops


def test_qoperator_format_carries_the_steps():
    model = hardswish_net()
    on, off = _quantize(model, True, "qoperator"), _quantize(model, False, "qoperator")
    ops = [n.op_type for n in ir.to_proto(on.model).graph.node]
    assert ops.count("QLinearConv") == 4, ops
    unseen = feeds(8, 1)
    assert _min_sqnr(model, on, unseen)["y"] >= _min_sqnr(model, off, unseen)["y"] + 6.0


def test_narrow_channels_only():
    model = hardswish_net(spread=1.0)  # channels alike: no gain of 2x anywhere, nothing to do
    proto = ir.to_proto(_quantize(model, True).model)
    assert not [n for n in proto.graph.node if n.name.endswith("_channels")]


@pytest.mark.parametrize(("cmin", "cmax", "want"), [
    ([-1.0, -0.1, 0.0], [1.0, 0.1, 0.0], [1.0, 5.0, 1.0]),  # full channel 1x, a 10x narrower one 10/2, a dead one 1x
    ([0.0], [1e-6], [MAX_GAIN]),  # capped
    ([-0.01], [1.0], [1.0]),  # already spans the range above zero
])
def test_channel_gains(cmin, cmax, want):
    k = channel_gains(np.array(cmin), np.array(cmax), -1.0, 1.0)
    np.testing.assert_allclose(k, want, rtol=1e-6)
    assert HEADROOM == 2.0


def test_ranges_table_keeps_channel_extremes(tmp_path):
    from edgeq.calibrate import collect_ranges
    from edgeq.calibrate.ranges import RangesTable

    model = ir.from_proto(hardswish_net())
    table = collect_ranges(model, ["a1", "h1"], feeds(4, 0), channel_axes={"a1": 1}, progress=False)
    channels = table["a1"].summary["channels"]
    assert channels["axis"] == 1 and len(channels["min"]) == 32
    assert max(channels["max"]) == pytest.approx(table["a1"].max)
    assert "channels" not in table["h1"].summary
    path = tmp_path / "r.json"
    table.save(path)
    assert RangesTable.load(path)["a1"].summary["channels"] == channels
