"""TensorRT calibration cache: header, one 'name: hex(float32 BE)' line per tensor, round trip."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest

from edgeq.calibrate import RangesTable, TensorRange, collect_ranges, read_trt_cache, write_trt_cache
from edgeq.config import QuantConfig
from edgeq.errors import UsageError

from .graphs import conv_model


def test_cache_text_format_and_scales(tmp_path, rng):
    model = conv_model()
    feeds = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(2)]
    table = collect_ranges(model, ["x", "c", "r", "y"], feeds, QuantConfig(method="percentile"), progress=False)
    path = write_trt_cache(table, tmp_path / "calib.cache")
    lines = open(path, encoding="utf-8").read().splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert len(lines) == 5 and all(re.fullmatch(r"[xcry]: [0-9a-f]{8}", line) for line in lines[1:])
    for line in lines[1:]:
        name, hexval = line.split(": ")
        scale = struct.unpack(">f", bytes.fromhex(hexval))[0]
        amax = max(abs(table[name].lo), abs(table[name].hi))
        assert scale == pytest.approx(amax / 127, rel=1e-6)
    assert read_trt_cache(path) == pytest.approx({n: max(abs(r.lo), abs(r.hi)) / 127 for n, r in table.items()}, rel=1e-6)


def test_known_value_and_errors(tmp_path):
    table = RangesTable({"t": TensorRange(lo=-1.27, hi=0.5, min=-1.27, max=0.5)})
    path = write_trt_cache(table, tmp_path / "a.cache")
    assert open(path).read() == "TRT-8601-EntropyCalibration2\nt: 3c23d70a\n"  # 0.01 as float32 BE
    with pytest.raises(UsageError, match="not 'uint8'"):
        write_trt_cache(table, tmp_path / "b.cache", quant_dtype="uint8")
