"""collect_ranges with minmax: exact extremes through a real onnxruntime session."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgeq.calibrate import RangesTable, collect_ranges, load_data
from edgeq.config import QuantConfig
from edgeq.errors import DataError, UsageError
from ortutil import run_ort

from .graphs import conv_model, identity_model


def test_minmax_is_exact_on_known_data(rng):
    model = identity_model()
    feeds = [{"x": rng.standard_normal((2, 5)).astype(np.float32) * (i + 1)} for i in range(4)]
    table = collect_ranges(model, ["t", "y", "x"], load_data(feeds, model), QuantConfig(), progress=False)
    data = np.concatenate([f["x"].ravel() for f in feeds])
    assert table["t"].lo == table["t"].min == pytest.approx(data.min())
    assert table["t"].hi == table["t"].max == pytest.approx(data.max())
    assert (table["y"].lo, table["y"].hi) == pytest.approx((-data.max(), -data.min()))
    assert (table["x"].lo, table["x"].hi) == (table["t"].lo, table["t"].hi)
    assert table.num_samples == 4 and table["t"].summary["num_samples"] == 4


def test_conv_model_ranges_match_ort_outputs_and_model_is_untouched(rng):
    model = conv_model()
    before = model.SerializeToString()
    feeds = [{"x": rng.standard_normal((1, 3, 6 + i, 7)).astype(np.float32)} for i in range(3)]
    table = collect_ranges(model, ["c", "r", "y", "s", "w"], feeds, QuantConfig(), progress=False)
    # the reference: run the original graph's y output and the conv weights directly
    ys = np.concatenate([run_ort(model, f)[0].ravel() for f in feeds])
    assert (table["y"].min, table["y"].max) == pytest.approx((ys.min(), ys.max()))
    assert table["r"].max == pytest.approx(ys.max() / 2) and table["r"].min == 0.0
    assert table["c"].min < 0 < table["c"].max
    w = onnx.numpy_helper.to_array(model.graph.initializer[0])
    assert (table["w"].lo, table["w"].hi) == pytest.approx((w.min(), w.max()))
    assert "s" not in table and "int64" in table.meta["skipped"]["s"]
    assert model.SerializeToString() == before


def test_max_samples_limits_the_feeds(rng):
    model = identity_model()
    feeds = [{"x": np.full((1, 2), float(i), np.float32)} for i in range(10)]
    table = collect_ranges(model, ["t"], feeds, QuantConfig(max_samples=3), progress=False)
    assert table.num_samples == 3 and table["t"].max == 2.0


def test_constant_and_zero_tensors_get_a_usable_range():
    model = identity_model()
    zeros = collect_ranges(model, ["t"], [{"x": np.zeros((2, 3), np.float32)}], QuantConfig(), progress=False)["t"]
    assert zeros.lo < 0 < zeros.hi and zeros.min == zeros.max == 0.0
    const = collect_ranges(model, ["t"], [{"x": np.full((2, 3), 3.0, np.float32)}], QuantConfig(), progress=False)["t"]
    assert (const.lo, const.hi) == (0.0, 3.0)
    from edgeq.errors import DataError

    with pytest.raises(DataError, match="empty"):  # a batch of zero: no range can come from it (issue 14)
        collect_ranges(model, ["t"], [{"x": np.zeros((0, 3), np.float32)}], QuantConfig(), progress=False)


def test_unknown_name_and_subgraph_value():
    model = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x, bool c) => (float[2] y) {
            y = If(c) <then_branch = t () => (float[2] a) { a = Relu(x) },
                       else_branch = e () => (float[2] b) { b = Neg(x) }>
        }"""
    )
    feeds = [{"x": np.array([1.0, -2.0], np.float32), "c": np.array(True)}]
    table = collect_ranges(model, ["y", "a", "b"], feeds, QuantConfig(), progress=False)
    assert (table["y"].lo, table["y"].hi) == (0.0, 1.0)
    assert (table["a"].min, table["a"].max) == (0.0, 1.0)  # inside the branch taken: routed out
    assert "b" not in table and "empty" in table.meta["skipped"]["b"]  # the branch no sample took
    with pytest.raises(UsageError, match="'nope' is not in the model"):
        collect_ranges(model, ["nope"], feeds, QuantConfig(), progress=False)


def test_run_failure_names_the_feed():
    model = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[N] x) => (float[2,3] y) {
            shape = Constant<value = int64[2] {2, 3}>()
            r = Relu(x)
            y = Reshape(r, shape)
        }"""
    )
    feeds = [{"x": np.ones(6, np.float32)}, {"x": np.ones(5, np.float32)}]
    with pytest.raises(DataError, match=r"running feed #1 of the calibration feeds through the model failed"):
        collect_ranges(model, ["r", "y"], feeds, QuantConfig(), progress=False)


def test_json_round_trip(tmp_path, rng):
    model = conv_model()
    feeds = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}]
    table = collect_ranges(model, ["c", "r"], feeds, QuantConfig(), progress=False)
    path = table.save(tmp_path / "ranges.json")
    back = RangesTable.load(path)
    assert dict(back) == dict(table) and back.num_samples == 1 and back.meta == table.meta


def test_external_data_model_from_path(tmp_path, rng):
    """A model whose weights live in external data calibrates from its path, same ranges."""
    from edgeq.io import load_model

    model = conv_model()
    feeds = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}]
    expected = collect_ranges(model, ["c", "r", "w"], feeds, QuantConfig(), progress=False)
    external = onnx.ModelProto()
    external.CopyFrom(model)
    onnx.save(external, tmp_path / "m.onnx", save_as_external_data=True, location="m.data", size_threshold=0)
    assert (tmp_path / "m.data").stat().st_size > 0
    assert dict(collect_ranges(str(tmp_path / "m.onnx"), ["c", "r", "w"], feeds, QuantConfig(), progress=False)) == dict(expected)
    loaded = load_model(tmp_path / "m.onnx")
    assert dict(collect_ranges(loaded, ["c", "r", "w"], feeds, QuantConfig(), progress=False)) == dict(expected)
    assert [v.name for v in loaded.graph.outputs] == ["y", "s"]  # outputs restored
