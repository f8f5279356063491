"""Concurrency and determinism (issue 14, item 5).

One ``Session`` from 8 threads gives what it gives one input at a time; 8 processes quantizing
into one folder each write a complete model, byte-identical to a sequential run's; two writing
one path end with one valid file and no temporary files; the same model, data and options give
byte-identical models twice in one process and in two processes (static, and auto with a
deterministic cost model in place of measured latency).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "runtime"))
from rt_nets import conv_net  # noqa: E402

from ortutil import run_ort  # noqa: E402

TESTS = os.path.dirname(os.path.abspath(__file__))

# A child process: quantize ARGV through the CLI, auto's latency and fp32 profile replaced by the cost model.
_CHILD = f"""
import sys
sys.path.insert(0, {TESTS!r})
from ortutil import int8_pays_timing, int8_pays_unit_times
from edgeq.auto import latency, unit_time
latency.measure = int8_pays_timing
unit_time.unit_times = int8_pays_unit_times
from edgeq.cli.main import main
main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("conc")
    model = folder / "model.onnx"
    model.write_bytes(conv_net()[0].SerializeToString())
    calib = folder / "calib"
    calib.mkdir()
    for i in range(4):
        x = np.random.default_rng(i).standard_normal((2, 3, 8, 8)).astype(np.float32)
        np.savez(calib / f"{i}.npz", x=x)
    return model, calib


@pytest.fixture(scope="module")
def int8_model(setup) -> Path:
    import edgeq
    from edgeq.config import QuantConfig

    model, calib = setup
    out = model.parent / "int8.onnx"
    edgeq.quantize(str(model), QuantConfig(mode="static", format="qoperator"), str(calib), progress=False).save(out)
    return out


def _quantize_cmd(model: Path, calib: Path, out: Path, mode: str | None = "static") -> list[str]:
    argv = ["quantize", str(model), "-o", str(out), "--calib", str(calib)]
    return [sys.executable, "-c", _CHILD, *argv, *(["--mode", mode] if mode else [])]


def _start(cmd: list[str], hash_seed: int) -> subprocess.Popen:
    """Each child hashes strings differently, so set or dict order drawn from hashes would show."""
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed)}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _wait(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()


def _quantize_in_process(model: Path, calib: Path, mode: str, out: Path) -> bytes:
    import edgeq
    from edgeq.config import QuantConfig

    config = QuantConfig(mode=mode) if mode != "auto" else None  # None: the default, auto
    edgeq.quantize(str(model), config, str(calib), progress=False).save(out)
    return out.read_bytes()


def _loads(path: Path) -> None:
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_session_from_8_threads_matches_one_at_a_time(setup, int8_model, kind):
    """8 threads x 20 inputs of 1 to 3 samples on one Session (threads=1 and onnxruntime's
    default pool), already built or built by the threads at once: the outputs bit for bit."""
    from edgeq.runtime import Session

    model = setup[0] if kind == "fp32" else int8_model
    sess = Session(str(model), threads=1)
    rng = np.random.default_rng(7)
    feeds = [{"x": rng.standard_normal((int(1 + i % 3), 3, 8, 8)).astype(np.float32)} for i in range(8 * 20)]
    expected = [sess.run(f)["y"] for f in feeds]

    fresh = Session(str(model), threads=1)  # built lazily by the 8 threads at once
    pooled = Session(str(model))  # onnxruntime's own intra-op pool as well
    for shared in (sess, fresh, pooled):
        def worker(t: int, shared=shared) -> list[tuple[int, np.ndarray]]:
            return [(i, shared.run(feeds[i])["y"]) for i in range(t * 20, t * 20 + 20)]

        with ThreadPoolExecutor(8) as pool:
            results = [r for chunk in pool.map(worker, range(8)) for r in chunk]
        assert sorted(i for i, _ in results) == list(range(len(feeds)))
        for i, y in results:
            np.testing.assert_array_equal(y, expected[i])


def test_8_processes_into_one_folder_match_sequential(setup, tmp_path):
    model, calib = setup
    reference = tmp_path / "sequential.onnx"
    subprocess.run(_quantize_cmd(model, calib, reference), check=True, capture_output=True)
    out = tmp_path / "out"
    _wait([_start(_quantize_cmd(model, calib, out / f"m{i}.onnx"), i) for i in range(8)])
    want = reference.read_bytes()
    for i in range(8):
        _loads(out / f"m{i}.onnx")
        assert (out / f"m{i}.onnx").read_bytes() == want, f"m{i}.onnx differs from the sequential run's"
    assert sorted(os.listdir(out)) == [f"m{i}.onnx" for i in range(8)]  # no temporary files left


def test_two_processes_one_path_leave_one_valid_file(setup, tmp_path):
    model, calib = setup
    out = tmp_path / "same.onnx"
    _wait([_start(_quantize_cmd(model, calib, out), i) for i in range(2)])
    _loads(out)
    assert os.listdir(tmp_path) == ["same.onnx"]  # the loser's temporary file is gone too


@pytest.mark.parametrize("mode", ["static", "auto"])
def test_same_inputs_give_byte_identical_models(setup, tmp_path, monkeypatch, mode):
    from edgeq.auto import latency, unit_time
    from ortutil import int8_pays_timing, int8_pays_unit_times

    monkeypatch.setattr(latency, "measure", int8_pays_timing)  # measured latency is noise; auto's choices must not be
    monkeypatch.setattr(unit_time, "unit_times", int8_pays_unit_times)  # nor is the fp32 profile
    model, calib = setup
    first = _quantize_in_process(model, calib, mode, tmp_path / "a.onnx")
    assert _quantize_in_process(model, calib, mode, tmp_path / "b.onnx") == first, "two runs in one process differ"
    _wait([_start(_quantize_cmd(model, calib, tmp_path / f"p{i}.onnx", None if mode == "auto" else mode), i + 1)
           for i in range(2)])
    a, b = ((tmp_path / f"p{i}.onnx").read_bytes() for i in range(2))
    assert a == b, "two processes differ"
    assert a == first, "a process and the library call differ"


def _sized_net(i: int) -> onnx.ModelProto:
    """x[1,64] -> MatMul(W[64, 64+8i] = i+1) -> Add(B = i): models whose weights differ in size,
    so that one's model file paired with another's ``.data`` cannot pass for a whole save."""
    from onnx import TensorProto, helper, numpy_helper

    width = 64 + 8 * i
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "B"], ["y"])],
        f"sized{i}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        [numpy_helper.from_array(np.full((64, width), i + 1, np.float32), "W"),
         numpy_helper.from_array(np.full(width, i, np.float32), "B")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("external_data", [False, True])
def test_writers_racing_on_one_path_leave_one_whole_model(tmp_path, monkeypatch, external_data):
    """8 threads saving 8 different models onto one path at once, 10 rounds: the survivor is one
    of them whole (with external data: its model file and its ``.data`` from the same save)."""
    import time

    import onnx_ir as ir

    from edgeq import io
    from edgeq.io import save_model

    replace = os.replace
    delays = iter(np.random.default_rng(0).uniform(0, 0.003, 10_000))

    def slow_replace(src, dst):  # widens the window between a save's two renames, unevenly
        replace(src, dst)
        time.sleep(next(delays))

    monkeypatch.setattr(io.os, "replace", slow_replace)

    models = [ir.from_proto(_sized_net(i)) for i in range(8)]
    feed = {"x": np.ones((1, 64), np.float32)}
    expected = [run_ort(ir.to_proto(m), feed)[0] for m in models]
    out = tmp_path / "same.onnx"
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        barrier.wait()
        save_model(models[i], out, external_data=external_data)

    for _ in range(10):  # rounds of 8 saves started together: the last rename decides, contested
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(worker, range(8)))
        got = run_ort(str(out), feed)[0]  # a torn pair fails to load or computes another model's numbers
        assert any(got.shape == want.shape and np.array_equal(got, want) for want in expected), \
            "the model and its weights come from different saves"
    assert sorted(os.listdir(tmp_path)) == ["same.onnx", "same.onnx.data"][: 1 + external_data]
