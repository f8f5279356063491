"""Issue 14 item 4: valid but suspicious calibration data gets a warning naming the input and the
sample; data no range can come from (NaN, Inf, an empty batch) is an error."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest

from edgeq.calibrate import load_data
from edgeq.errors import DataError

MODEL = onnx.parser.parse_model("""
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] a, int64[N] ids) => (float[N, 4] y, int64[N] n) {
    y = Relu(a)
    n = Identity(ids)
}
""")


def _feeds(make, n=3):
    return [{"a": make(i), "ids": np.arange(2, dtype=np.int64)} for i in range(n)]


def _warnings(caplog, feeds):
    with caplog.at_level(logging.WARNING, logger="edgeq.calibrate.data_warnings"):
        list(load_data(feeds, MODEL))
    return [r.getMessage() for r in caplog.records if r.name == "edgeq.calibrate.data_warnings"]


def test_ordinary_data_gets_no_warning(caplog):
    assert _warnings(caplog, _feeds(lambda i: np.random.default_rng(i).standard_normal((2, 4)).astype(np.float32))) == []


def test_all_zero_and_constant_inputs_are_named(caplog):
    (zero,) = _warnings(caplog, _feeds(lambda i: np.zeros((2, 4), np.float32)))
    assert "input 'a' is all zeros in all 3 sample(s)" in zero
    caplog.clear()
    (constant,) = _warnings(caplog, _feeds(lambda i: np.full((2, 4), 0.5, np.float32)))
    assert "input 'a' is the constant 0.5" in constant


def test_absurdly_large_values_name_the_sample(caplog):
    def make(i):
        x = np.ones((2, 4), np.float32) * i
        if i == 2:
            x[1, 3] = 1e30
        return x

    (large,) = _warnings(caplog, _feeds(make))
    assert "input 'a' holds 1e+30 in feed #2" in large


def test_files_name_the_file(tmp_path, caplog):
    for i in range(2):
        np.savez(tmp_path / f"{i}.npz", a=np.zeros((1, 4), np.float32), ids=np.zeros(1, np.int64))
    with caplog.at_level(logging.WARNING, logger="edgeq.calibrate.data_warnings"):
        load_data(str(tmp_path), MODEL)
    assert any(f"calibration data {tmp_path}" in r.getMessage() and "all zeros" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad, expected", [
    (np.full((2, 4), np.nan, np.float32), "holds NaN"),
    (np.full((2, 4), np.inf, np.float32), "holds Inf"),
    (np.zeros((0, 4), np.float32), "is empty (shape [0, 4])"),
])
def test_no_range_can_be_computed_is_an_error(bad, expected):
    feeds = _feeds(lambda i: np.ones((2, 4), np.float32))
    feeds[1]["a"] = bad
    if bad.shape[0] == 0:
        feeds[1]["ids"] = np.zeros(0, np.int64)
    with pytest.raises(DataError, match="input 'a' in feed #1") as info:
        load_data(feeds, MODEL)
    assert expected in str(info.value)
