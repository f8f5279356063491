"""TensorRT: typed options become the right onnxruntime provider options, and a missing TensorRT
falls back to the next provider with a logged reason (TensorRT itself is not installed here)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from compare.graphs import conv_feeds, conv_net
from edgeq.calibrate import RangesTable, TensorRange, read_trt_cache, write_trt_cache
from edgeq.errors import ProviderError, UsageError
from edgeq.runtime import CUDAOptions, Session, TensorRTOptions
from edgeq.runtime.providers import resolve_chain

TRT = "TensorrtExecutionProvider"


def test_trt_options_map_to_onnxruntime_names(tmp_path):
    table = RangesTable({"x": TensorRange(-2.0, 2.0, -2.5, 2.5), "c1": TensorRange(0.0, 6.35, 0.0, 7.0)})
    cache = write_trt_cache(table, tmp_path / "calib" / "model.cache")
    assert read_trt_cache(cache)["c1"] == pytest.approx(6.35 / 127, rel=1e-6)
    opts = TensorRTOptions(fp16=True, int8=True, engine_cache_dir=str(tmp_path / "engines"),
                           timing_cache_dir=str(tmp_path / "timing"), workspace_bytes=2 << 30,
                           int8_calibration_cache=cache, device_id=1).to_ort()
    assert opts == {
        "device_id": "1",
        "trt_fp16_enable": "1",
        "trt_int8_enable": "1",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": str(tmp_path / "engines"),
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": str(tmp_path / "timing"),
        "trt_max_workspace_size": str(2 << 30),
        "trt_int8_calibration_table_name": "model.cache",
        "trt_int8_use_native_calibration_table": "1",
    }
    # Without an engine cache folder the table's own folder is where onnxruntime looks it up.
    alone = TensorRTOptions(int8=True, int8_calibration_cache=cache).to_ort()
    assert alone["trt_engine_cache_path"] == str(tmp_path / "calib")
    assert TensorRTOptions().to_ort() == {"device_id": "0", "trt_fp16_enable": "0", "trt_int8_enable": "0"}


def test_trt_option_mistakes_are_usage_errors():
    with pytest.raises(UsageError, match="without int8=True"):
        TensorRTOptions(int8_calibration_cache="x.cache")
    with pytest.raises(UsageError, match="workspace_bytes"):
        TensorRTOptions(workspace_bytes=0)


def test_chain_keeps_order_and_options_when_trt_is_available():
    chain = resolve_chain((TensorRTOptions(fp16=True), CUDAOptions(), "cpu"),
                          available=[TRT, "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert [name for name, _ in chain] == [TRT, "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert chain[0][1]["trt_fp16_enable"] == "1"
    assert chain[1][1]["cudnn_conv_algo_search"] == "EXHAUSTIVE"


def test_missing_trt_falls_back_to_next_provider_with_logged_reason(caplog):
    chain = ("trt", "cpu")
    with caplog.at_level(logging.WARNING, logger="edgeq.runtime.providers"):
        resolved = resolve_chain(chain, available=["CPUExecutionProvider"])
    assert [name for name, _ in resolved] == ["CPUExecutionProvider"]
    assert any(TRT in r.getMessage() and "not available" in r.getMessage() for r in caplog.records)


def test_session_with_trt_options_runs_on_fallback_and_matches_cpu(caplog):
    import onnxruntime as ort

    if TRT in ort.get_available_providers():
        pytest.skip("TensorRT provider present: this test covers the fallback")
    model = conv_net().SerializeToString()
    feeds = conv_feeds()
    with caplog.at_level(logging.WARNING):
        sess = Session(model, providers=(TensorRTOptions(fp16=True, int8=False), "cpu"))
        got = sess.run(feeds)["logits"]
    assert sess.providers[0] == "CPUExecutionProvider"
    assert any("Tensorrt" in r.getMessage() for r in caplog.records)
    ref = Session(model, providers=("cpu",)).run(feeds)["logits"]
    np.testing.assert_array_equal(got, ref)


def test_only_trt_requested_and_missing_is_a_provider_error():
    with pytest.raises(ProviderError, match="available"):
        resolve_chain(("trt",), available=["CPUExecutionProvider"])
