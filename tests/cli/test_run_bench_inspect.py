"""edgeq run / bench / inspect end to end through edgeq.cli.main.main."""

from __future__ import annotations

import importlib
import importlib.util
import json

import numpy as np
import pytest
from rt_nets import conv_net, conv_net_reference, save

from edgeq.cli.main import main


def _main(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    d = tmp_path_factory.mktemp("net")
    model, weights = conv_net()
    return save(model, d / "net.onnx"), weights


def test_run_prints_summary(net, tmp_path, capsys):
    path, weights = net
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    code, out, err = _main(["run", path, "--inputs", tmp_path / "in.npz", "--threads", "1"], capsys)
    assert code == 0, err
    expected = conv_net_reference(x, weights)
    row = next(line for line in out.splitlines() if "│ y " in line)
    assert "2x10" in row and "float32" in row
    assert f"{expected.max():.4g}"[:4] in row  # the max column


def test_run_saves_outputs_for_a_file_and_a_folder(net, tmp_path, capsys):
    path, weights = net
    rng = np.random.default_rng(1)
    folder = tmp_path / "inputs"
    folder.mkdir()
    xs = {}
    for name in ("a", "b"):
        xs[name] = rng.standard_normal((1 if name == "a" else 3, 3, 8, 8)).astype(np.float32)
        np.savez(folder / f"{name}.npz", x=xs[name])
    code, _, err = _main(["run", path, "--inputs", folder / "a.npz", "--out", tmp_path / "y.npz"], capsys)
    assert code == 0, err
    with np.load(tmp_path / "y.npz") as saved:
        np.testing.assert_allclose(saved["y"], conv_net_reference(xs["a"], weights), rtol=1e-4, atol=1e-4)
    code, _, err = _main(["run", path, "--inputs", folder, "--out", tmp_path / "outs"], capsys)
    assert code == 0, err
    for name, x in xs.items():
        with np.load(tmp_path / "outs" / f"{name}.npz") as saved:
            np.testing.assert_allclose(saved["y"], conv_net_reference(x, weights), rtol=1e-4, atol=1e-4)
    # never over an input
    code, _, err = _main(["run", path, "--inputs", folder / "a.npz", "--out", folder / "a.npz"], capsys)
    assert code == 2 and "never writes over its inputs" in err


def test_run_reference(net, tmp_path, capsys):
    import onnx

    from ortutil import run_ort

    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 4] y) {
            s = Constant<value = float {0.05}>()
            z = Constant<value = int8 {0}>()
            q = QuantizeLinear(x, s, z)
            y = DequantizeLinear(q, s, z)
        }
        """
    )
    path = save(model, tmp_path / "q.onnx")
    x = np.array([[0.1, -0.2, 0.33, 50.0]], np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    code, out, err = _main(["run", path, "--inputs", tmp_path / "in.npz", "--reference", "--out", tmp_path / "y.npz"],
                           capsys)
    available = importlib.util.find_spec("edgeq.reference") is not None and hasattr(
        importlib.import_module("edgeq.reference"), "run"
    )
    if not available:
        assert code == 2 and err.startswith("edgeq: error: --reference needs") and len(err.splitlines()) == 1
        return
    assert code == 0, err
    with np.load(tmp_path / "y.npz") as saved:
        np.testing.assert_allclose(saved["y"], run_ort(model, {"x": x})[0], atol=0.05 + 1e-6)  # within 1 LSB
        assert saved["y"][0, 3] == pytest.approx(127 * 0.05)  # saturated at int8's top
    # a float model is not integer-only: one line naming the op
    np.savez(tmp_path / "conv_in.npz", x=np.zeros((1, 3, 8, 8), np.float32))
    code, _, err = _main(["run", net[0], "--inputs", tmp_path / "conv_in.npz", "--reference"], capsys)
    assert code != 0 and err.startswith("edgeq: error:") and "Conv" in err and len(err.splitlines()) == 1


def test_bench_json(net, tmp_path, capsys):
    path, _ = net
    other = save(conv_net(seed=3)[0], tmp_path / "other.onnx")
    out_json = tmp_path / "bench.json"
    code, out, err = _main(["bench", path, other, "--threads", "1", "--batch", "1,2", "--iters", "12",
                            "--warmup", "1", "--json", out_json], capsys)
    assert code == 0, err
    report = json.loads(out_json.read_text())
    results = report["results"]
    assert [(r["model"], r["batch"]) for r in results] == [(path, 1), (path, 2), (other, 1), (other, 2)]
    for r in results:
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["iters"] == 12
        assert r["throughput"] == pytest.approx(r["batch"] * 1e3 / r["mean_ms"], rel=1e-6)
    assert results[2]["speedup"] == pytest.approx(results[0]["p50_ms"] / results[2]["p50_ms"])
    assert "vs first" in out and "net.onnx" in out and "other.onnx" in out
    assert all(r["rounds"] == 3 for r in results) and "medians of 3 rounds" in out  # two models: interleaved
    code, out, err = _main(["bench", path, other, "--iters", "4", "--warmup", "0", "--rounds", "2", "--json",
                            out_json], capsys)
    assert code == 0, err
    results = json.loads(out_json.read_text())["results"]
    assert [(r["rounds"], r["iters"]) for r in results] == [(2, 4), (2, 4)] and "medians of 2 rounds" in out
    lo, hi = results[1]["speedup_range"]  # two rounds: the ratio of their means lies between theirs
    assert lo * (1 - 1e-9) <= results[1]["speedup"] <= hi * (1 + 1e-9)


def test_bench_input_shape_and_dims(tmp_path, capsys):
    import onnx

    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[batch, seq] ids) => (float[batch, seq] y) { y = Cast<to = 1>(ids) }
        """
    )
    path = save(model, tmp_path / "ids.onnx")
    code, _, err = _main(["bench", path, "--iters", "10", "--in-process"], capsys)
    assert code == 2 and "symbolic 'seq'" in err
    out_json = tmp_path / "b.json"
    code, _, err = _main(["bench", path, "--iters", "10", "--dim", "seq=16", "--batch", "3", "--json", out_json], capsys)
    assert code == 0, err
    assert json.loads(out_json.read_text())["results"][0]["input_shapes"] == {"ids": [3, 16]}
    code, _, err = _main(["bench", path, "--iters", "10", "--input-shape", "ids=1x7", "--json", out_json], capsys)
    assert code == 0, err
    assert json.loads(out_json.read_text())["results"][0]["input_shapes"] == {"ids": [1, 7]}


def test_inspect_json_and_tables(net, capsys):
    path, _ = net
    code, out, err = _main(["inspect", path, "--json", "--dim", "N=2"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["macs"] == 2 * 4736 and info["params"] == 1514 and info["int8_share"] == 0.0
    assert info["op_histogram"] == {"Conv": 1, "Relu": 1, "Flatten": 1, "Gemm": 1}
    code, out, err = _main(["inspect", path, "--quantizability"], capsys)
    assert code == 0, err
    assert "MACs: 4.736K" in out and "parameters: 1.514K" in out
    assert "quantizability" in out
