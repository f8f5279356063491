"""bench: figures and their consistency, isolation in fresh processes, inputs, errors."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from rt_nets import conv_net, save

from edgeq.errors import ModelLoadError, ProviderError, UsageError
from edgeq.runtime.bench import BenchResult, bench, bench_report, file_bytes


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save(conv_net()[0], tmp_path_factory.mktemp("bench") / "net.onnx")


def _check_consistent(r: BenchResult) -> None:
    assert 0 < r.min_ms <= r.p50_ms <= r.p90_ms <= r.p99_ms <= r.max_ms
    assert r.min_ms <= r.mean_ms <= r.max_ms
    # throughput = samples / total run time = batch / mean latency
    assert r.throughput == pytest.approx(r.batch / (r.mean_ms / 1e3), rel=1e-6)
    assert r.session_start_ms > 0
    assert r.peak_rss_delta_bytes is not None and r.peak_rss_delta_bytes >= 0
    assert r.providers_used == ("CPUExecutionProvider",)


def test_isolated_bench_over_threads_and_batches(model_path):
    results = bench([model_path], providers=["cpu"], threads=[1, 2], batches=[1, 4], warmup=2, iters=15)
    assert [(r.threads, r.batch) for r in results] == [(1, 1), (1, 4), (2, 1), (2, 4)]
    for r in results:
        _check_consistent(r)
        assert r.iters == 15 and r.warmup == 2
        assert r.input_shapes == {"x": [r.batch, 3, 8, 8]}
        assert r.file_bytes == os.path.getsize(model_path)
        assert r.speedup is None
    report = json.loads(json.dumps(bench_report(results)))
    assert report["results"][1]["batch"] == 4 and report["results"][1]["p50_ms"] == results[1].p50_ms
    assert BenchResult.from_dict(report["results"][0]) == results[0]


def test_seconds_budget_and_speedup_against_first(model_path, tmp_path):
    other = save(conv_net(seed=1)[0], tmp_path / "other.onnx")
    results = bench([model_path, other], seconds=0.05, min_iters=12, warmup=1, isolate=False)
    first, second = results
    assert first.iters >= 12 and second.iters >= 12  # 3 rounds of at least 4 runs each
    assert first.rounds == second.rounds == 3 and first.speedup is None
    assert second.speedup == pytest.approx(first.p50_ms / second.p50_ms)
    lo, hi = second.speedup_range
    assert lo <= hi and lo > 0
    _check_consistent(second)
    assert BenchResult.from_dict(json.loads(json.dumps(second.to_dict()))) == second
    (alone,) = bench([model_path], iters=10, warmup=0, isolate=False)  # one model: one round, no range
    assert alone.rounds == 1 and alone.iters == 10 and alone.speedup_range is None


def test_rounds_interleave_the_models_and_take_medians(model_path, tmp_path, monkeypatch):
    """Each provider x threads x batch: the models one after the other, their order rotated each
    round, the budget split between the rounds; a model's p50 is the median of its rounds (a burst
    in one round does not move it), the speed-up the ratio of the medians, its range the rounds'."""
    import dataclasses

    import edgeq.runtime.bench as bench_module

    other = save(conv_net(seed=2)[0], tmp_path / "b.onnx")
    real, calls = bench_module.measure, []
    p50 = {("net.onnx", 1): [1.0, 5.0, 1.2], ("b.onnx", 1): [0.8, 0.9, 0.7],  # a burst in round 2 of net
           ("net.onnx", 2): [2.0, 2.0, 2.0], ("b.onnx", 2): [4.0, 4.0, 1.0]}

    def fake(model, provider, threads, *, batch, iters, min_iters, seconds, **kw):
        name = os.path.basename(model)
        calls.append((name, batch, iters, min_iters, seconds))
        ms = p50[(name, batch)][sum(c[:2] == (name, batch) for c in calls) - 1]
        r = real(model, provider, threads, batch=batch, iters=2, warmup=0)
        return dataclasses.replace(r, iters=iters, p50_ms=ms, p90_ms=ms * 1.1, p99_ms=ms * 1.2, min_ms=ms * 0.9,
                                   max_ms=ms * 1.3, mean_ms=ms, throughput=batch / (ms / 1e3))

    monkeypatch.setattr(bench_module, "measure", fake)
    results = bench([model_path, other], batches=[1, 2], iters=7, min_iters=10, warmup=0, isolate=False)
    assert [c[:2] for c in calls] == [("net.onnx", 1), ("b.onnx", 1), ("net.onnx", 2), ("b.onnx", 2),
                                      ("b.onnx", 1), ("net.onnx", 1), ("b.onnx", 2), ("net.onnx", 2),
                                      ("net.onnx", 1), ("b.onnx", 1), ("net.onnx", 2), ("b.onnx", 2)]
    assert {c[2:] for c in calls} == {(3, 4, 2.0 / 3)}  # iters 7 and min_iters 10 over 3 rounds, rounded up
    net1, net2, b1, b2 = results  # model x provider x threads x batch, as without rounds
    assert (net1.model, net1.batch, b2.model, b2.batch) == (model_path, 1, other, 2)
    assert net1.p50_ms == 1.2 and b1.p50_ms == pytest.approx(0.8) and net1.iters == 9 and net1.rounds == 3
    assert b1.speedup == pytest.approx(1.2 / 0.8) and b1.speedup_range == pytest.approx((1.25, 5.0 / 0.9))
    assert b2.speedup == pytest.approx(0.5) and b2.speedup_range == pytest.approx((0.5, 2.0))
    assert net1.min_ms == pytest.approx(0.9) and net1.max_ms == pytest.approx(6.5)
    assert net1.mean_ms == pytest.approx((1.0 + 5.0 + 1.2) / 3)
    for r in results:
        _check_consistent(r)
    with pytest.raises(UsageError, match="rounds must be at least 1"):
        bench([model_path, other], rounds=0)


def test_external_data_counts_in_file_size(tmp_path):
    model = conv_net()[0]
    path = str(tmp_path / "ext.onnx")
    onnx.save_model(model, path, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    assert file_bytes(path) == os.path.getsize(path) + os.path.getsize(tmp_path / "ext.onnx.data")
    (r,) = bench([path], iters=10, warmup=0, isolate=False)
    assert r.file_bytes == file_bytes(path) > 5000


def test_given_inputs_are_tiled_to_the_batch(model_path, tmp_path):
    np.savez(tmp_path / "x.npz", x=np.ones((2, 3, 8, 8), np.float32))
    own, tiled = bench([model_path], batches=None, inputs=str(tmp_path / "x.npz"), iters=10, isolate=False), \
        bench([model_path], batches=[5], inputs=str(tmp_path / "x.npz"), iters=10, isolate=False)
    assert own[0].batch == 2 and own[0].input_shapes == {"x": [2, 3, 8, 8]}
    assert tiled[0].batch == 5 and tiled[0].input_shapes == {"x": [5, 3, 8, 8]}


def test_unavailable_providers_are_skipped_or_refused(model_path, monkeypatch):
    import edgeq.runtime.providers as providers

    monkeypatch.setattr(providers, "available_providers", lambda: ["CPUExecutionProvider"])
    (r,) = bench([model_path], providers=["cuda", "cpu"], iters=10, isolate=False)
    assert r.provider == "cpu" and not r.fell_back
    with pytest.raises(ProviderError, match="available: .*CPUExecutionProvider"):
        bench([model_path], providers=["trt"], iters=10)


def test_errors_before_and_inside_the_worker(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        bench([str(tmp_path / "none.onnx")])
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):  # raised in the subprocess
        bench([str(bad)], iters=10)
    with pytest.raises(UsageError, match="iters must be at least 1"):
        bench([str(bad)], iters=0)


def test_fallback_is_marked(model_path, monkeypatch):
    """A provider that is listed but cannot run (onnxruntime-gpu without TensorRT) is flagged."""
    import edgeq.runtime.providers as providers

    monkeypatch.setattr(providers, "available_providers",
                        lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    (r,) = bench([model_path], providers=["trt"], iters=10, isolate=False)
    assert r.fell_back and r.providers_used == ("CPUExecutionProvider",)
    from edgeq.cli.bench import _provider

    assert _provider(r) == "trt FELL BACK to CPU"


def test_peak_memory_sees_the_weights(tmp_path):
    """A model with 40 MB more weights shows at least ~40 MB more peak RSS (fresh processes)."""
    from onnx import TensorProto, helper, numpy_helper

    def matmul(k: int, name: str) -> str:
        w = np.random.default_rng(0).standard_normal((k, 1000)).astype(np.float32)
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "W"], ["y"])], name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1000])],
            [numpy_helper.from_array(w, "W")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return save(model, tmp_path / f"{name}.onnx")

    small, big = bench([matmul(10, "small"), matmul(10_000, "big")], iters=3, warmup=1)
    assert big.peak_rss_delta_bytes - small.peak_rss_delta_bytes >= 36e6
    assert big.file_bytes > 40e6 > small.file_bytes
