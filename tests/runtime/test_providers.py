"""Provider names, typed options -> onnxruntime options, and the fallback chain."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from rt_nets import conv_net, conv_net_reference

import edgeq.runtime.providers as providers
from edgeq.errors import ProviderError, UsageError
from edgeq.runtime import CPUOptions, CUDAOptions, Session, TensorRTOptions
from edgeq.runtime.providers import canonical_name, resolve_chain


@pytest.mark.parametrize(
    "name, full",
    [
        ("cpu", "CPUExecutionProvider"),
        ("CPU", "CPUExecutionProvider"),
        ("cpuexecutionprovider", "CPUExecutionProvider"),
        ("cuda", "CUDAExecutionProvider"),
        ("trt", "TensorrtExecutionProvider"),
        ("TensorRT", "TensorrtExecutionProvider"),
        ("TensorrtExecutionProvider", "TensorrtExecutionProvider"),
        ("dml", "DmlExecutionProvider"),
        ("coreml", "CoreMLExecutionProvider"),
        ("openvino", "OpenVINOExecutionProvider"),
        (" xnnpack ", "XnnpackExecutionProvider"),
    ],
)
def test_names_match_loosely(name, full):
    assert canonical_name(name) == full


def test_unknown_name_lists_the_choices():
    with pytest.raises(ProviderError, match=r"unknown execution provider 'cpux'.*cpu, cuda"):
        canonical_name("cpux")


def test_tensorrt_options_to_ort(tmp_path):
    opts = TensorRTOptions(
        fp16=True,
        int8=True,
        engine_cache_dir=str(tmp_path / "engines"),
        timing_cache_dir=str(tmp_path / "timing"),
        workspace_bytes=2 << 30,
        int8_calibration_cache=str(tmp_path / "calib" / "model.cache"),
    )
    assert opts.to_ort() == {
        "device_id": "0",
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
    # Without an engine cache folder, the table's folder is where onnxruntime looks it up.
    only_table = TensorRTOptions(int8=True, int8_calibration_cache=str(tmp_path / "t.cache")).to_ort()
    assert only_table["trt_engine_cache_path"] == str(tmp_path)
    assert TensorRTOptions().to_ort() == {"device_id": "0", "trt_fp16_enable": "0", "trt_int8_enable": "0"}


def test_cuda_and_cpu_options():
    assert CUDAOptions(device_id=1, cudnn_conv_algo_search="HEURISTIC").to_ort() == {
        "device_id": "1",
        "cudnn_conv_algo_search": "HEURISTIC",
        "enable_cuda_graph": "0",
        "use_tf32": "1",
    }
    assert CUDAOptions(use_tf32=False).to_ort()["use_tf32"] == "0"
    assert CUDAOptions(use_io_binding=True, enable_cuda_graph=True).to_ort()["enable_cuda_graph"] == "1"
    assert CPUOptions(arena=False).to_ort() == {"use_arena": "0"}


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: CPUOptions(graph_optimization="max"), "graph_optimization 'max'"),
        (lambda: CPUOptions(threads=-1), "threads must be a non-negative integer"),
        (lambda: CPUOptions(execution_mode="async"), "execution_mode 'async'"),
        (lambda: CUDAOptions(cudnn_conv_algo_search="fast"), "cudnn_conv_algo_search 'fast'"),
        (lambda: CUDAOptions(enable_cuda_graph=True), "CUDA graphs need IO binding"),
        (lambda: TensorRTOptions(workspace_bytes=0), "workspace_bytes must be a positive"),
        (lambda: TensorRTOptions(int8_calibration_cache="x.cache"), "without int8=True"),
    ],
)
def test_options_are_validated(make, pattern):
    with pytest.raises(UsageError, match=pattern):
        make()


def test_chain_keeps_order_and_skips_unavailable(caplog):
    avail = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with caplog.at_level(logging.WARNING, logger="edgeq.runtime.providers"):
        chain = resolve_chain(("trt", CUDAOptions(device_id=0), "cpu", "CPU"), available=avail)
    assert [name for name, _ in chain] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert chain[0][1]["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert "TensorrtExecutionProvider is not available" in caplog.text
    assert [n for n, _ in resolve_chain("cuda,cpu", available=avail)] == avail


def test_none_available_lists_what_is():
    with pytest.raises(ProviderError, match=r"none of the requested providers \(TensorrtExecutionProvider, "
                       r"CUDAExecutionProvider\).*available: CPUExecutionProvider"):
        resolve_chain(["trt", "cuda"], available=["CPUExecutionProvider"])
    with pytest.raises(ProviderError, match="no execution provider was requested"):
        resolve_chain([], available=["CPUExecutionProvider"])


def test_session_falls_back_from_tensorrt_to_cpu(caplog, rng):
    """TensorRT is not installed here: the session runs on the next provider and says so."""
    model, weights = conv_net()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        sess = Session(model, providers=(TensorRTOptions(fp16=True), "cpu"))
        out = sess.run({"x": x})
    assert sess.providers == ["CPUExecutionProvider"]
    assert "TensorrtExecutionProvider" in caplog.text
    np.testing.assert_allclose(out["y"], conv_net_reference(x, weights), rtol=1e-4, atol=1e-4)


def test_listed_but_unusable_provider_falls_back(monkeypatch, caplog, rng):
    """Like onnxruntime-gpu without TensorRT's libraries: listed as available, then not used."""
    monkeypatch.setattr(providers, "available_providers",
                        lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    model, weights = conv_net()
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="edgeq.runtime.session"):
        sess = Session(model, providers=("trt", "cpu"))
        assert sess.requested_providers == ["TensorrtExecutionProvider", "CPUExecutionProvider"]
        out = sess.run({"x": x})
    assert sess.providers == ["CPUExecutionProvider"]
    assert "TensorrtExecutionProvider could not be used" in caplog.text
    np.testing.assert_allclose(out["y"], conv_net_reference(x, weights), rtol=1e-4, atol=1e-4)


def test_only_unavailable_providers_is_an_error(monkeypatch):
    monkeypatch.setattr(providers, "available_providers", lambda: ["CPUExecutionProvider"])
    model, _ = conv_net()
    with pytest.raises(ProviderError, match="available: .*CPUExecutionProvider"):
        Session(model, providers=("cuda",))
