"""edgeq.cluster (issue 18): work spread over a Ray cluster gives the same bytes, and no fault
loses a result silently.

Without Ray: observers merged from shards equal one observer fed every batch, bit for bit (the
histogram's grid, counts, the value at its top edge, the batch-extreme moments). With Ray (the
``cluster`` extra, installed by ``make venv``): a local two-node cluster (``ray.cluster_utils``;
the second node offers a fake device), on which static calibration, sensitivity and auto's
per-layer ranking give byte-identical results to one process; a worker that dies is replaced; a
task that always dies, runs past its limit, or needs a device no node offers (or that left) is
reported by name; an edgeq error inside a task comes out as itself.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time
import types
from typing import Any

import numpy as np
import onnx_ir as ir
import pytest

from edgeq.calibrate.observers import ChannelRange, HistogramObserver, MinMaxObserver
from edgeq.errors import ClusterError, DataError, UsageError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "runtime"))
from rt_nets import conv_net  # noqa: E402

from auto.nets import DYNAMIC_NET, build, outlier_feeds, outlier_net  # noqa: E402

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs Ray: pip install 'edgeq[cluster]'")


# -- merging observers: no Ray -------------------------------------------------------------------
def _batches(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = [np.zeros(50, np.float32), np.zeros(7, np.float32)]  # zeros before any range
    for i in range(30):
        scale = [0.01, 1.0, 3.0, 0.5, 1000.0][i % 5] if i > 10 else 0.2 * (i + 1)
        batch = (rng.standard_normal(257) * scale).astype(np.float32)
        if i % 4 == 0:
            batch[:3] = [1.0, -1.0, 2.0 ** (i % 7)]  # values on the grid's top edge (R is a power of two)
        out.append(batch)
    return out


def _same(a: MinMaxObserver, b: MinMaxObserver) -> None:
    assert (a.min, a.max, a.num_batches) == (b.min, b.max, b.num_batches)
    for m in ("batch_max", "batch_neg_min"):
        ma, mb = getattr(a, m), getattr(b, m)
        assert (ma.count, ma.mean, ma.m2) == (mb.count, mb.mean, mb.m2)
    if isinstance(a, HistogramObserver):
        assert a.radius == b.radius
        assert np.array_equal(a.signed_histogram()[0], b.signed_histogram()[0])
        assert np.array_equal(a.abs_histogram()[0], b.abs_histogram()[0])


@pytest.mark.parametrize("kind", ["histogram", "minmax"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_observers_merged_from_shards_equal_one_observer_bit_for_bit(kind, seed):
    def make(record=False):
        return HistogramObserver("t", 64, record) if kind == "histogram" else MinMaxObserver("t", record)

    batches = _batches(seed)
    serial = make()
    for b in batches:
        serial.update(b)
    cuts = sorted(np.random.default_rng(seed + 10).choice(np.arange(1, len(batches)), 5, replace=False))
    merged = make()
    for shard in np.split(np.arange(len(batches)), cuts):
        part = make(record=True)
        for i in shard:
            part.update(batches[i])
        merged.merge(part)
    _same(serial, merged)
    if kind == "histogram":
        assert serial.signed_histogram()[0].sum() == sum(b.size for b in batches)


def test_a_value_on_the_top_edge_keeps_its_bin_when_the_range_grows():
    """x == R sits in the last bin while R holds; once R doubles, it belongs to the bin starting
    at R, as if it had come after (the old grid would have merged it one bin lower)."""
    first, second = HistogramObserver("t", 8), HistogramObserver("t", 8)
    first.update(np.array([1.0], np.float32))  # R = 1: the last bin of [-1, 1]
    assert first.signed_histogram()[0][-1] == 1
    first.update(np.array([1.5], np.float32))  # R = 2
    second.update(np.array([1.5], np.float32))
    second.update(np.array([1.0], np.float32))
    assert np.array_equal(first.signed_histogram()[0], second.signed_histogram()[0])
    assert first.signed_histogram()[0][8 + 4] == 1  # [1.0, 1.25)


def test_channel_ranges_and_unrecorded_observers_merge_as_documented():
    a, b = ChannelRange(1), ChannelRange(1)
    a.update(np.array([[1.0, -2.0]]))
    b.update(np.array([[3.0, -5.0]]))
    a.merge(b)
    assert a.min.tolist() == [1.0, -5.0] and a.max.tolist() == [3.0, -2.0]
    plain = MinMaxObserver("t")
    plain.update(np.ones(3))
    with pytest.raises(ValueError, match="record=True"):
        MinMaxObserver("t").merge(plain)


def test_without_ray_the_option_says_what_to_install(monkeypatch, tmp_path):
    from edgeq import cluster

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UsageError, match=r"edgeq\[cluster\]"):
        cluster.connect("local")
    assert not cluster.current().distributed  # the serial executor: nothing needs Ray
    assert cluster.current().map(lambda shared, item: shared + item, [1, 2], shared=10) == [11, 12]


# -- on a Ray cluster ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    import ray
    from ray.cluster_utils import Cluster

    from edgeq import cluster

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests
    small = 120 * 2**20
    local = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False,
                                                         "object_store_memory": small})
    device = local.add_node(num_cpus=1, resources={"device:fake": 1}, object_store_memory=small)
    executor = cluster.connect(local.address, env={"EDGEQ_INT8_SATURATES": os.environ.get("EDGEQ_INT8_SATURATES", "1")})
    yield local, executor, device
    executor.close()
    local.shutdown()


def _on(executor, call):
    from edgeq import cluster

    with cluster.using(executor):
        return call()


@needs_ray
@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_calibration_on_the_cluster_is_byte_identical(ray_cluster, method, monkeypatch):
    import edgeq
    from edgeq.calibrate import shards
    from edgeq.config import QuantConfig

    _, executor, _ = ray_cluster
    calls = []
    real = shards.observe_on_cluster
    monkeypatch.setattr(shards, "observe_on_cluster", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = conv_net()[0]
    feeds = [{"x": (np.random.default_rng(i).standard_normal((2, 3, 8, 8)) * (1 + i % 5)).astype(np.float32)}
             for i in range(37)]  # shards of 8: the last one short
    config = QuantConfig(mode="static", method=method)
    here = edgeq.quantize(model, config, feeds, progress=False)
    there = _on(executor, lambda: edgeq.quantize(model, config, feeds, progress=False))
    assert calls, "the calibration did not go to the cluster"
    assert there.ranges.to_dict() == here.ranges.to_dict()
    assert ir.to_proto(there.model).SerializeToString() == ir.to_proto(here.model).SerializeToString()


@needs_ray
def test_auto_calibration_on_the_cluster_is_bit_identical(ray_cluster, monkeypatch):
    """``calibrate_once`` (auto, sensitivity): histograms, per-channel sums and maxima, Conv
    outputs' channel ranges, from shards merged in order, equal one pass's."""
    from edgeq.auto import calib, calib_shards
    from edgeq.auto.calib import calibrate_once
    from edgeq.auto.workbench import prepare_float
    from edgeq.config import QuantConfig

    _, executor, _ = ray_cluster
    calls = []
    real = calib_shards.observe_on_cluster
    monkeypatch.setattr(calib_shards, "observe_on_cluster", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(calib, "MIN_SPREAD", 16)  # (below it, calibration stays here)
    model, _ = prepare_float(outlier_net(), QuantConfig(), outlier_feeds(2))
    feeds = outlier_feeds(21)
    here = calibrate_once(model, feeds, progress=False)
    there = _on(executor, lambda: calibrate_once(model, feeds, progress=False))
    assert calls and there.num_samples == here.num_samples == 21
    assert set(there.observers) == set(here.observers) and here.channels and here.out_channels
    for name, obs in here.observers.items():
        _same(obs, there.observers[name])
    for name, ch in here.channels.items():
        assert np.array_equal(ch.sums, there.channels[name].sums) and ch.count == there.channels[name].count
        assert np.array_equal(ch.absmax, there.channels[name].absmax)
    for name, rng in here.out_channels.items():
        assert rng.summary() == there.out_channels[name].summary()
    assert there.table("entropy").to_dict() == here.table("entropy").to_dict()


@needs_ray
def test_sensitivity_on_the_cluster_is_identical(ray_cluster):
    from edgeq.auto import sensitivity

    _, executor, _ = ray_cluster
    args = (outlier_net(), outlier_feeds(12))
    here = sensitivity(*args, eval_data=outlier_feeds(6, seed=5), progress=False)
    there = _on(executor, lambda: sensitivity(*args, eval_data=outlier_feeds(6, seed=5), progress=False))
    assert there.to_dict() == here.to_dict()
    assert here.layers[0]["outlier_dominated"] == ["x"]


@needs_ray
def test_auto_ranks_and_requantizes_on_the_cluster_to_the_same_model(ray_cluster, monkeypatch):
    import edgeq
    from edgeq.auto import latency, search, unit_time
    from edgeq.config import QuantConfig
    from ortutil import int8_pays_timing, int8_pays_unit_times

    monkeypatch.setattr(latency, "measure", int8_pays_timing)  # timing decides nothing here: the same bytes or not
    monkeypatch.setattr(unit_time, "unit_times", int8_pays_unit_times)
    from edgeq.auto import ahead as run_ahead
    from edgeq.auto.ahead import Ahead

    monkeypatch.setattr(run_ahead, "MIN_WORKERS", 2)  # (this cluster has 3 CPUs)
    ranked, ahead = [], []
    real, real_close = search._rank_on_cluster, Ahead.close
    monkeypatch.setattr(search, "_rank_on_cluster", lambda *a, **k: ranked.append(1) or real(*a, **k))
    monkeypatch.setattr(Ahead, "close", lambda self: ahead.append(self.taken) or real_close(self))
    _, executor, _ = ray_cluster
    rng = np.random.default_rng(5)
    model = build(DYNAMIC_NET, {w: rng.normal(0, 0.25, (64, 64)) for w in ("W1", "W2", "W3")})
    feeds = [{"x": rng.standard_normal((4, 64)).astype(np.float32)} for _ in range(16)]
    config = QuantConfig(mode="auto", min_sqnr=34.0, time_budget_s=None)  # int8 everywhere misses: ranked
    here = edgeq.quantize(model, config, feeds, progress=False)
    there = _on(executor, lambda: edgeq.quantize(model, config, feeds, progress=False))
    assert ranked, "the per-layer ranking did not go to the cluster"
    assert ahead and ahead[0] > 0, "the search's chains did not run ahead on the cluster"
    assert any("most sensitive float" in c["name"] for c in here.report["auto"]["configurations"])
    assert ir.to_proto(there.model).SerializeToString() == ir.to_proto(here.model).SerializeToString()
    assert there.report["auto"]["verdict"] == here.report["auto"]["verdict"]


def _die_once(folder, item):
    marker = os.path.join(folder, f"died-{item}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)  # the worker process dies mid-task
    return item * item


def _always_die(_, item):
    os._exit(1)


def _slow(_, item):
    time.sleep(60 if item == 1 else 0)
    return item


def _bad_data(_, item):
    raise DataError(f"sample {item} holds NaN: give finite data")


def _node(_, item):
    import ray

    return ray.get_runtime_context().get_node_id()


@needs_ray
def test_a_worker_that_dies_is_replaced_and_no_result_is_lost(ray_cluster, tmp_path):
    _, executor, _ = ray_cluster
    assert executor.map(_die_once, [1, 2, 3, 4], shared=str(tmp_path)) == [1, 4, 9, 16]
    assert len(os.listdir(tmp_path)) == 4  # each task's first worker died


@needs_ray
def test_faults_that_do_not_heal_are_reported_by_task(ray_cluster):
    _, executor, _ = ray_cluster
    with pytest.raises(ClusterError, match=r"task 0: its worker died 2 time\(s\)"):
        executor.map(_always_die, [0], retries=1)
    began = time.perf_counter()
    # the limit leaves room for workers to start again after the deaths above on a loaded machine
    with pytest.raises(ClusterError, match="task 1 ran past its limit of 10 s"):
        executor.map(_slow, [0, 1, 2], timeout_s=10)
    assert time.perf_counter() - began < 40
    with pytest.raises(DataError, match="sample 2 holds NaN"):  # an edgeq error comes out as itself
        executor.map(_bad_data, [2])


@needs_ray
def test_device_jobs_run_only_where_the_device_is(ray_cluster):
    local, executor, device = ray_cluster
    nodes = executor.map(_node, range(4), resources={"device:fake": 1})
    assert set(nodes) == {device.node_id}
    with pytest.raises(ClusterError, match="no node of the cluster .* offers device:absent"):
        executor.map(_node, [0], resources={"device:absent": 1})


@needs_ray
def test_a_device_node_that_leaves_mid_job_is_reported(ray_cluster):
    local, executor, _ = ray_cluster
    leaving = local.add_node(num_cpus=1, resources={"device:leaving": 1}, object_store_memory=80 * 2**20)
    local.wait_for_nodes()
    threading.Timer(4.0, lambda: local.remove_node(leaving)).start()
    with pytest.raises(ClusterError, match="device:leaving any more"):
        executor.map(_slow, [1], resources={"device:leaving": 1}, timeout_s=20)


@needs_ray
def test_a_node_with_other_versions_is_refused(ray_cluster):
    from edgeq.cluster.ray_executor import _versions

    _, executor, _ = ray_cluster
    assert len(executor.check_nodes()) >= 2
    with pytest.raises(ClusterError, match="runs onnxruntime .* where this machine runs 0.0.1"):
        executor.check_nodes({**_versions(), "onnxruntime": "0.0.1"})


@needs_ray
def test_auto_size_target_probes_on_the_cluster_to_the_same_file(ray_cluster, monkeypatch):
    import edgeq
    from edgeq.auto import latency
    from edgeq.config import QuantConfig
    from ortutil import int8_pays_timing

    monkeypatch.setattr(latency, "measure", int8_pays_timing)  # timing decides nothing here: the same bytes or not
    _, executor, _ = ray_cluster
    labels, real_map = [], executor.map
    monkeypatch.setattr(executor, "map", lambda fn, items, **kw: labels.append(kw.get("label")) or real_map(fn, items, **kw))
    rng = np.random.default_rng(6)
    model = build(DYNAMIC_NET, {w: rng.normal(0, 0.25, (64, 64)) for w in ("W1", "W2", "W3")})
    feeds = [{"x": rng.standard_normal((4, 64)).astype(np.float32)} for _ in range(16)]
    config = QuantConfig(mode="auto", min_sqnr=20.0, max_size="min", min_top1=0.0, time_budget_s=None)
    here = edgeq.quantize(model, config, feeds, progress=False)
    there = _on(executor, lambda: edgeq.quantize(model, config, feeds, progress=False))
    assert "size probe" in labels, "the size target's probes did not go to the cluster"
    assert here.report["auto"]["size"]["stored"] == "codebooks"
    assert ir.to_proto(there.model).SerializeToString() == ir.to_proto(here.model).SerializeToString()
    assert there.report["auto"]["size"]["plan"] == here.report["auto"]["size"]["plan"]


def _cli(args: list[str]) -> int:
    from edgeq.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code or 0


@needs_ray
def test_cli_quantize_on_the_cluster_writes_the_same_file(ray_cluster, tmp_path):
    import onnx

    local, _, _ = ray_cluster
    onnx.save(conv_net()[0], tmp_path / "m.onnx")
    (tmp_path / "calib").mkdir()
    for i in range(20):
        np.savez(tmp_path / "calib" / f"{i:02d}.npz", x=np.random.default_rng(i).standard_normal((2, 3, 8, 8)).astype(np.float32))
    common = [str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib"), "--mode", "static", "--method", "entropy", "-q"]
    assert _cli(["quantize", *common, "-o", str(tmp_path / "here.onnx")]) == 0
    assert _cli(["quantize", *common, "-o", str(tmp_path / "there.onnx"), "--cluster", local.address, "--workers", "2"]) == 0
    assert (tmp_path / "here.onnx").read_bytes() == (tmp_path / "there.onnx").read_bytes()


@needs_ray
def test_cli_bench_and_compare_run_on_the_device_node(ray_cluster, tmp_path, capsys):
    import json

    import onnx

    local, _, device = ray_cluster
    onnx.save(conv_net()[0], tmp_path / "m.onnx")
    model = str(tmp_path / "m.onnx")
    assert _cli(["bench", model, "--cluster", local.address, "--device", "fake", "--seconds", "0.2", "--in-process",
                 "--json", str(tmp_path / "b.json")]) == 0
    data = json.loads((tmp_path / "b.json").read_text())
    [row] = data["results"]
    assert row["model"] == model and row["iters"] >= 10
    assert row["session_start_ms"] > 0 and row["first_run_ms"] > 0 and row["p50_ms"] > 0  # cold start, first run, warm loop
    assert data["device"]["device"] == "fake" and data["device"]["node"]
    assert _cli(["compare", model, model, "--cluster", local.address, "--device", "fake", "--seconds", "0.2",
                 "--no-profile", "--out", str(tmp_path / "cmp")]) == 0
    report = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert report["device"]["device"] == "fake" and model in json.dumps(report)
    capsys.readouterr()
    assert _cli(["bench", model, "--device", "fake"]) == 2  # a device without a cluster
    assert "--cluster" in capsys.readouterr().err
    assert _cli(["bench", model, "--cluster", local.address, "--device", "absent", "--seconds", "0.2"]) == 1
    assert "offers device:absent" in capsys.readouterr().err


def test_feeds_run_concurrently_come_back_in_order_and_errors_at_their_turn():
    from edgeq.calibrate.observe import run_in_order

    def slow_square(i: int) -> int:
        time.sleep(0.01 * (5 - i % 5))  # later items finish first
        if i == 7:
            raise DataError("sample 7 holds NaN: give finite data")
        return i * i

    got = []
    with pytest.raises(DataError, match="sample 7"):
        for item, value in run_in_order(slow_square, range(12), width=4):
            got.append((item, value))
    assert got == [(i, i * i) for i in range(7)]
    assert list(run_in_order(lambda i: -i, range(5), width=1)) == [(i, -i) for i in range(5)]


def test_an_address_where_no_cluster_answers_fails_in_seconds():
    import socket

    from edgeq.cluster.ray_executor import _check_reachable

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # closed again below: nothing listens there
    began = time.perf_counter()
    with pytest.raises(ClusterError, match=f"no Ray cluster answers at 127.0.0.1:{port}.*--cluster local"):
        _check_reachable(f"127.0.0.1:{port}")
    assert time.perf_counter() - began < 10
    with pytest.raises(UsageError, match="is not an address"):
        _check_reachable("nonsense")
    _check_reachable("local")  # nothing to probe


def _spread(width):
    """A serial executor that says it spreads work over ``width`` workers: auto runs its chains
    ahead (``auto/ahead.py``) through the workers' code path, in this process (each task runs
    when its result is asked for)."""
    from edgeq import cluster

    executor = cluster.Executor()
    executor.distributed, executor.width = True, width
    return executor


def _same_auto(model, config, feeds, width):
    import edgeq

    here = edgeq.quantize(model, config, feeds, progress=False)
    there = _on(_spread(width), lambda: edgeq.quantize(model, config, feeds, progress=False))
    assert ir.to_proto(there.model).SerializeToString() == ir.to_proto(here.model).SerializeToString()
    assert there.report["auto"]["verdict"] == here.report["auto"]["verdict"]
    assert [c["name"] for c in there.report["auto"]["configurations"]] == \
        [c["name"] for c in here.report["auto"]["configurations"]]
    return here


def test_chains_run_ahead_give_the_same_model_and_build_here_only_what_is_used(monkeypatch):
    """Auto through ``ahead.py``'s path (built and scored as a worker builds them, from the
    serialized float model) against the plain loop: the same bytes, verdict and configurations;
    the builds the chains took from the workers were mostly never built again here."""
    from edgeq.auto import ahead, latency, unit_time
    from edgeq.auto.state import Config
    from edgeq.config import QuantConfig
    from ortutil import int8_pays_timing, int8_pays_unit_times

    monkeypatch.setattr(latency, "measure", int8_pays_timing)
    monkeypatch.setattr(unit_time, "unit_times", int8_pays_unit_times)
    counts, real_close = [], ahead.Ahead.close
    monkeypatch.setattr(ahead.Ahead, "close", lambda self: counts.append((self.submitted, self.taken)) or real_close(self))
    built_here, real_result = [], Config.result.fget
    monkeypatch.setattr(Config, "result", property(
        lambda c: (built_here.append(c.name) if c.later is not None and not c.built else None) or real_result(c),
        Config.result.fset))
    model, feeds = _deep_convs(12)
    here = _same_auto(model, QuantConfig(mode="auto", min_sqnr=40.0, time_budget_s=None), feeds, 4)
    assert any("most sensitive float" in c["name"] for c in here.report["auto"]["configurations"])  # bisected
    (submitted, taken), = counts
    assert taken >= 8 and submitted >= taken, counts
    assert len(built_here) < taken / 2, (built_here, taken)


def _deep_convs(layers: int) -> tuple[Any, list[dict]]:
    """x[1,16,6,6] -> (Conv 3x3 -> Relu) x layers, weights with growing outliers: a ranked prefix to bisect."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    nodes, inits, last = [], [], "x"
    for i in range(layers):
        w = rng.normal(0, 1 / np.sqrt(16 * 9), (16, 16, 3, 3)).astype(np.float32)
        w[rng.integers(0, 16), rng.integers(0, 16), 1, 1] *= 1 + 4 * i  # an outlier weight, larger deeper
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(np.zeros(16, np.float32), f"B{i}")]
        nodes += [helper.make_node("Conv", [last, f"W{i}", f"B{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        last = f"r{i}"
    graph = helper.make_graph(nodes, "deep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 6, 6])],
                              [helper.make_tensor_value_info(last, TensorProto.FLOAT, [1, 16, 6, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model, [{"x": np.abs(rng.standard_normal((1, 16, 6, 6))).astype(np.float32)} for _ in range(16)]


def test_bias_corrected_configurations_run_ahead_to_the_same_model(monkeypatch):
    """Bias correction kept: the workers correct each configuration's int8 nodes from the channel
    means, as this process does."""
    from auto.test_auto import BIAS2
    from edgeq.auto import ahead, latency, unit_time
    from edgeq.config import QuantConfig
    from ortutil import int8_pays_timing, int8_pays_unit_times

    monkeypatch.setattr(latency, "measure", int8_pays_timing)
    monkeypatch.setattr(unit_time, "unit_times", int8_pays_unit_times)
    biased, real_plan = [], ahead.Ahead.plan
    monkeypatch.setattr(ahead.Ahead, "plan", lambda self, builds, **k: biased.extend(b for b in builds if b.get("bias"))
                        or real_plan(self, builds, **k))
    rng = np.random.default_rng(0)
    scale = np.exp(np.linspace(-3, 1, 16)).reshape(16, 1, 1, 1)
    proto = build(BIAS2, {"W1": rng.normal(0.05, 0.3, (16, 8, 3, 3)) * scale, "B1": rng.normal(0, 0.1, 16),
                          "W2": rng.normal(0.02, 0.1, (16, 16, 3, 3)) * scale, "B2": rng.normal(0, 0.1, 16)})
    feeds = [{"x": (3.0 + rng.normal(0, 0.5, (1, 8, 10, 10))).astype(np.float32)} for _ in range(12)]
    here = _same_auto(proto, QuantConfig(mode="auto", min_sqnr=40.0, granularity="per-tensor", time_budget_s=None),
                      feeds, 4)
    assert {r["repair"]: r["kept"] for r in here.report["auto"]["repairs"]}["bias correction"]
    assert biased, "no bias-corrected configuration ran ahead"


def test_below_min_workers_auto_runs_as_one_process():
    from edgeq import cluster

    """``ahead.MIN_WORKERS``: with fewer workers, one process's concurrent scoring is faster, and
    auto's search does not spread (calibration shards follow their own rule, ``calib.MIN_SPREAD``)."""
    from edgeq.auto import ahead

    search = types.SimpleNamespace()
    assert ahead.Ahead.open(search) is None  # the serial executor
    for width, spread in ((1, False), (ahead.MIN_WORKERS - 1, False), (ahead.MIN_WORKERS, True), (16, True)):
        executor = _spread(width)
        assert ahead.spreads(executor) is spread
        assert (_on(executor, lambda: ahead.Ahead.open(search)) is not None) is spread
    # the ranking: from half this process's concurrent feeds (2 workers on 2 cores, 4 on 16)
    assert [ahead.ranks_on(_spread(w), 2) for w in (1, 2, 3)] == [False, True, True]
    assert [ahead.ranks_on(_spread(w), 8) for w in (2, 3, 4, 16)] == [False, False, True, True]
    assert not ahead.ranks_on(cluster.Executor(), 8)

