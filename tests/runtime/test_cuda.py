"""CUDA paths of the runtime: sessions, IO binding, CUDA graphs, TensorRT fallback, bench.

Needs onnxruntime-gpu with a working CUDAExecutionProvider; skipped otherwise.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from rt_nets import conv_net, conv_net_reference, save

pytestmark = pytest.mark.gpu


def _cuda_works() -> bool:
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return False
        from edgeq.runtime import Session

        return Session(conv_net()[0], providers=("cuda",)).providers[0] == "CUDAExecutionProvider"
    except Exception:
        return False


if not _cuda_works():
    pytest.skip("needs onnxruntime-gpu with a working CUDAExecutionProvider", allow_module_level=True)

from edgeq.errors import InputError  # noqa: E402
from edgeq.runtime import CUDAOptions, Session, TensorRTOptions  # noqa: E402
from edgeq.runtime.bench import bench  # noqa: E402

TOL = dict(rtol=2e-2, atol=2e-2)  # cuDNN may use TF32


@pytest.fixture(scope="module")
def net():
    return conv_net()


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)


def test_cuda_session(net, x):
    sess = Session(net[0], providers=("cuda", "cpu"))
    out = sess.run({"x": x})
    assert sess.providers[0] == "CUDAExecutionProvider"
    np.testing.assert_allclose(out["y"], conv_net_reference(x, net[1]), **TOL)


@pytest.mark.parametrize("graph", [False, True], ids=["io-binding", "cuda-graph"])
def test_io_binding_and_cuda_graph(net, x, graph):
    sess = Session(net[0], providers=(CUDAOptions(use_io_binding=True, enable_cuda_graph=graph), "cpu"))
    first = sess.run({"x": x})
    again = sess.run({"x": x * 2})  # a CUDA graph replays with the new input values
    assert sess.providers[0] == "CUDAExecutionProvider"
    np.testing.assert_allclose(first["y"], conv_net_reference(x, net[1]), **TOL)
    np.testing.assert_allclose(again["y"], conv_net_reference(x * 2, net[1]), **TOL)
    if graph:  # a captured graph replays one shape only
        with pytest.raises(InputError, match="CUDA graph was captured for"):
            sess.run({"x": x[:2]})


def test_tensorrt_falls_back_cleanly(net, x, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        sess = Session(net[0], providers=(TensorRTOptions(fp16=True, engine_cache_dir=str(tmp_path)), "cuda", "cpu"))
        out = sess.run({"x": x})
    assert sess.providers[0] in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    if sess.providers[0] != "TensorrtExecutionProvider":
        assert "TensorrtExecutionProvider" in caplog.text
    np.testing.assert_allclose(out["y"], conv_net_reference(x, net[1]), rtol=5e-2, atol=5e-2)


def test_bench_on_cuda(net, tmp_path):
    path = save(net[0], tmp_path / "net.onnx")
    results = bench([path], providers=["cuda", "cpu"], batches=[8], iters=20, warmup=3)
    assert [r.providers_used[0] for r in results] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    for r in results:
        assert r.p50_ms <= r.p90_ms <= r.p99_ms
