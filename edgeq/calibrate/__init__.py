"""Calibration: data readers, streaming observers, range methods, the ranges table.

    from edgeq.calibrate import load_data, collect_ranges, write_trt_cache
    source = load_data("calib/", model)                      # validated, re-iterable feeds
    table = collect_ranges(model, names, source, config)      # RangesTable
    table.save("ranges.json"); write_trt_cache(table, "calib.cache")
"""

from __future__ import annotations

from edgeq.calibrate.collect import collect_ranges
from edgeq.calibrate.data import FeedSource, load_data, model_input_specs
from edgeq.calibrate.ranges import RangesTable, TensorRange
from edgeq.calibrate.trt_cache import read_trt_cache, write_trt_cache

__all__ = [
    "load_data",
    "collect_ranges",
    "write_trt_cache",
    "read_trt_cache",
    "FeedSource",
    "RangesTable",
    "TensorRange",
    "model_input_specs",
]
