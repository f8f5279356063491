"""Issue 14, files and outputs: only regular files are read (a FIFO or a device gets one line at
once, never a hang), no output lands on any input (hard links and a report's siblings included),
a failure leaves no output, and a library's error is one line unless ``--debug``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from rt_nets import conv_net, save

from edgeq.cli.main import main


@pytest.fixture
def files(tmp_path):
    model = save(conv_net()[0], tmp_path / "net.onnx")
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(3):
        np.savez(calib / f"{i}.npz", x=np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32))
    return tmp_path, model, str(calib)


def _edgeq(argv, timeout=60):
    """edgeq in a child process: a hang is a TimeoutExpired, not a stuck test run."""
    return subprocess.run([sys.executable, "-m", "edgeq", *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def _one_line(proc, code: int, expected: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("edgeq: error: ") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def _in_process(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _hash(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# -- only regular files ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [["--mode", "static"], []], ids=["static", "default"])
def test_fifo_model_is_refused_at_once(files, mode):
    d, _, calib = files
    os.mkfifo(d / "pipe.onnx")
    proc = _edgeq(["quantize", d / "pipe.onnx", "-o", d / "q.onnx", "--calib", calib, *mode])
    _one_line(proc, 2, "is a FIFO (named pipe), not a regular file")
    assert not os.path.exists(d / "q.onnx")


@pytest.mark.parametrize("mode", [["--mode", "static"], []], ids=["static", "default"])
def test_fifo_calibration_file_is_refused_at_once(files, mode):
    d, model, calib = files
    os.mkfifo(d / "pipe.npz")
    proc = _edgeq(["quantize", model, "-o", d / "q.onnx", "--calib", d / "pipe.npz", *mode])
    _one_line(proc, 2, "calibration file")
    os.mkfifo(os.path.join(calib, "9.npz"))  # a FIFO among a folder's files
    proc = _edgeq(["quantize", model, "-o", d / "q.onnx", "--calib", calib, *mode])
    _one_line(proc, 2, "9.npz is a FIFO")


@pytest.mark.parametrize("option", ["--config", "--ranges", "--eval"])
def test_devices_and_fifos_as_other_inputs(files, capsys, option):
    d, model, calib = files
    target = d / ("pipe.npz" if option == "--eval" else "pipe.json")
    os.mkfifo(target)
    code, _, err = _in_process(["quantize", model, "-o", d / "q.onnx", "--calib", calib, "--mode", "static",
                                option, target], capsys)
    assert code == 2 and err.strip().startswith("edgeq: error: ") and "is a FIFO" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_device_model_and_folder_model(files, capsys):
    d, _, calib = files
    for model, expected in (("/dev/zero", "character device"), (d, "is a folder")):
        for argv in (["quantize", model, "-o", d / "q.onnx", "--calib", calib, "--mode", "static"],
                     ["prepare", model, "-o", d / "p.onnx"], ["inspect", model]):
            code, _, err = _in_process(argv, capsys)
            assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err


# -- never over an input -----------------------------------------------------------------------


def test_out_onto_a_calibration_file_is_refused(files, capsys):
    d, model, calib = files
    target = os.path.join(calib, "1.npz")
    before = _hash(target)
    code, _, err = _in_process(["quantize", model, "-o", target, "--calib", calib, "--mode", "static"], capsys)
    assert code == 2 and "is the same file as input" in err, err
    assert _hash(target) == before


def test_report_onto_the_model_is_refused(files, capsys):
    d, model, calib = files
    before = _hash(model)
    code, _, err = _in_process(["quantize", model, "-o", d / "q.onnx", "--calib", calib, "--mode", "static",
                                "--report", model], capsys)
    assert code == 2 and "same file as input" in err, err
    assert _hash(model) == before and not os.path.exists(d / "q.onnx")


def test_report_whose_markdown_sibling_is_an_input_is_refused(files, capsys):
    d, model, calib = files
    config = d / "settings.md"  # a JSON config, whatever its name: the report's .md sibling would be it
    config.write_text('{"method": "minmax"}')
    before = _hash(config)
    code, _, err = _in_process(["quantize", model, "-o", d / "q.onnx", "--calib", calib, "--mode", "static",
                                "--config", config, "--report", d / "settings.json"], capsys)
    assert code == 2 and "settings.md" in err, err
    assert _hash(config) == before and not os.path.exists(d / "q.onnx") and not os.path.exists(d / "settings.json")


def test_hard_link_of_the_model_is_refused(files, capsys):
    d, model, calib = files
    os.link(model, d / "alias.onnx")
    before = _hash(model)
    code, _, err = _in_process(["quantize", model, "-o", d / "alias.onnx", "--calib", calib, "--mode", "static"], capsys)
    assert code == 2 and "same file as input" in err, err
    code, _, err = _in_process(["prepare", model, "-o", d / "alias.onnx"], capsys)
    assert code == 2 and "same file as input" in err, err
    assert _hash(model) == before


def test_out_onto_the_models_external_data_is_refused(tmp_path, capsys):
    import onnx

    model, _ = conv_net()
    onnx.save(model, tmp_path / "ext.onnx", save_as_external_data=True, location="weights.bin", size_threshold=0)
    np.savez(tmp_path / "c.npz", x=np.ones((1, 3, 8, 8), np.float32))
    before = _hash(tmp_path / "weights.bin")
    code, _, err = _in_process(["quantize", tmp_path / "ext.onnx", "-o", tmp_path / "weights.bin",
                                "--calib", tmp_path / "c.npz", "--mode", "static"], capsys)
    assert code == 2 and "weights.bin" in err, err
    assert _hash(tmp_path / "weights.bin") == before


@pytest.mark.parametrize("option", ["--save-ranges", "--trt-cache"])
def test_side_outputs_onto_inputs_are_refused(files, capsys, option):
    d, model, calib = files
    target = os.path.join(calib, "0.npz")
    before = _hash(target)
    code, _, err = _in_process(["quantize", model, "-o", d / "q.onnx", "--calib", calib, "--mode", "static",
                                option, target], capsys)
    assert code == 2 and "same file as input" in err, err
    assert _hash(target) == before and not os.path.exists(d / "q.onnx")


def test_two_outputs_on_one_file_are_refused(files, capsys):
    d, model, calib = files
    code, _, err = _in_process(["quantize", model, "-o", d / "r.md", "--calib", calib, "--mode", "static",
                                "--report", d / "r.json"], capsys)
    assert code == 2 and "are the same file" in err, err
    assert not os.path.exists(d / "r.md") and not os.path.exists(d / "r.json")


def test_a_failure_leaves_the_old_output_and_no_partial_file(files, capsys):
    d, model, calib = files
    (d / "q.onnx").write_bytes(b"previous result")
    np.savez(os.path.join(calib, "9.npz"), x=np.full((1, 3, 8, 8), np.nan, np.float32))
    code, _, err = _in_process(["quantize", model, "-o", d / "q.onnx", "--calib", calib, "--mode", "static"], capsys)
    assert code == 2 and "NaN" in err
    assert (d / "q.onnx").read_bytes() == b"previous result"
    assert not [p for p in os.listdir(d) if p.startswith(".edgeq-")]


# -- one error boundary ------------------------------------------------------------------------


def _raise(error):
    def quantize(*args, **kwargs):
        raise error

    return quantize


def test_a_library_error_is_one_line_and_debug_shows_the_traceback(files, capsys, monkeypatch):
    import edgeq.quantizer

    d, model, calib = files
    argv = ["quantize", model, "-o", d / "q.onnx", "--calib", calib, "--mode", "static"]
    monkeypatch.setattr(edgeq.quantizer, "quantize", _raise(ZeroDivisionError("boom")))
    code, _, err = _in_process(argv, capsys)
    assert code == 1 and err.strip().splitlines() == [
        "edgeq: error: internal error (ZeroDivisionError: boom): rerun with --debug for the traceback and report it"]
    code, _, err = _in_process(["--debug", *argv], capsys)
    assert code == 1 and "Traceback" in err and "ZeroDivisionError: boom" in err
    # onnxruntime refusing a model is the input's fault: exit 2, its message without the C++ source path
    fail = type("Fail", (Exception,), {"__module__": "onnxruntime.capi.onnxruntime_pybind11_state"})
    monkeypatch.setattr(edgeq.quantizer, "quantize", _raise(fail(
        "[ONNXRuntimeError] : 1 : FAIL : /onnxruntime_src/onnxruntime/core/graph/graph.cc:1617 void "
        "onnxruntime::Graph::Init(bool) This is an invalid model.")))
    code, _, err = _in_process(argv, capsys)
    assert code == 2 and err.strip() == ("edgeq: error: onnxruntime refused the model (Fail: This is an invalid model.): "
                                         "check it with `edgeq inspect` and onnx.checker, or re-export it")
