"""The CLI error contract: a user's mistake is one line on stderr, `edgeq: error: ...`, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from rt_nets import conv_net, save

from edgeq.cli.main import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = save(conv_net()[0], d / "net.onnx")
    data = open(model, "rb").read()
    (d / "random.onnx").write_bytes(np.random.default_rng(0).bytes(2048))
    (d / "half.onnx").write_bytes(data[: len(data) // 2])
    np.savez(d / "good.npz", x=np.zeros((1, 3, 8, 8), np.float32))
    np.savez(d / "name.npz", image=np.zeros((1, 3, 8, 8), np.float32))
    np.savez(d / "shape.npz", x=np.zeros((1, 3, 9, 8), np.float32))
    np.savez(d / "dtype.npz", x=np.zeros((1, 3, 8, 8), np.float64))
    return d


CASES = {
    "missing-file": (["run", "{d}/none.onnx", "--inputs", "{d}/good.npz"], "does not exist"),
    "directory": (["run", "{d}", "--inputs", "{d}/good.npz"], "is a folder"),
    "corrupt": (["run", "{d}/random.onnx", "--inputs", "{d}/good.npz"], "not a valid ONNX model"),
    "truncated": (["run", "{d}/half.onnx", "--inputs", "{d}/good.npz"], "not a valid ONNX model"),
    "input-name": (["run", "{d}/net.onnx", "--inputs", "{d}/name.npz"], "unknown input name(s) 'image'"),
    "shape": (["run", "{d}/net.onnx", "--inputs", "{d}/shape.npz"], "dim 2 must be 8, not 9"),
    "dtype": (["run", "{d}/net.onnx", "--inputs", "{d}/dtype.npz"], "must be float32, got float64"),
    "provider": (["run", "{d}/net.onnx", "--inputs", "{d}/good.npz", "--providers", "tpu"],
                 "unknown execution provider 'tpu'"),
    # CANN (Ascend NPUs) is a known provider name that no standard onnxruntime wheel ships
    "bench-provider": (["bench", "{d}/net.onnx", "--providers", "cann"], "none of the requested providers"),
    "inspect-corrupt": (["inspect", "{d}/half.onnx"], "not a valid ONNX model"),
    "bad-feeds-file": (["run", "{d}/net.onnx", "--inputs", "{d}/random.onnx"], "must be an .npz"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_mistakes_give_one_line_and_exit_2(files, case):
    argv, expected = CASES[case]
    argv = [a.format(d=files) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "edgeq", *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edgeq: error: ") and expected in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["run", "--help"], ["bench", "--help"], ["inspect", "--help"]])
def test_help_and_version_exit_0(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("argv", [["no-such-command"], ["run"], ["bench", "m.onnx", "--iters", "0"], ["inspect", "--bad"]])
def test_click_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "Error" in capsys.readouterr().err
