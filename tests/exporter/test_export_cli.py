"""``edgeq export`` on the command line, option parsing, and light imports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeq.errors import UsageError
from edgeq.exporter import InputShape, merge_dynamic_axes, parse_dynamic, parse_input_shapes
from ortutil import run_ort


def test_parse_input_shapes_and_dynamic():
    assert parse_input_shapes(["input=1x3x224x224", "ids=2x128:int64"]) == {
        "input": InputShape((1, 3, 224, 224)),
        "ids": InputShape((2, 128), "int64"),
    }
    assert parse_dynamic(["input_ids:1=sequence", "input_ids:0=batch", "a:b:0=n"]) == {
        "input_ids": {1: "sequence", 0: "batch"},
        "a:b": {0: "n"},
    }
    for bad in (["input"], ["input=1xax3"], ["=1x3"], ["x=1x0"], ["x=1:complex"]):
        with pytest.raises(UsageError):
            parse_input_shapes(bad)
    for bad in (["input=batch"], ["input:x=batch"], ["input:0="]):
        with pytest.raises(UsageError, match="NAME:AXIS=LABEL"):
            parse_dynamic(bad)


def test_merge_dynamic_axes():
    assert merge_dynamic_axes(["x"], ["y"], dynamic_batch=True, dynamic={"x": {2: "h"}}) == {
        "x": {0: "batch", 2: "h"},
        "y": {0: "batch"},
    }
    with pytest.raises(UsageError, match="neither an input \\(x\\) nor an output \\(y\\)"):
        merge_dynamic_axes(["x"], ["y"], dynamic={"z": {0: "n"}})


def _edgeq(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeq", *args], capture_output=True, text=True)


def test_cli_export_json(tmp_path):
    out = tmp_path / "digits.onnx"
    done = _edgeq("export", "digits_resnet", "-o", str(out), "--exporter", "torchscript", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["exporter"] == "torchscript" and result["max_abs_error"] < 1e-4
    assert result["dynamic_axes"] == {"input": {"0": "batch"}, "logits": {"0": "batch"}}
    from edgeq import zoo

    feed = zoo.get("digits_resnet").eval_data(3)
    (logits,) = run_ort(str(out), {"input": np.concatenate([f["input"] for f in feed])})
    assert logits.shape == (3, 10)



@pytest.mark.parametrize(
    "args, message",
    [
        (["resnet_50"], "cannot export 'resnet_50': it is not a zoo model.*digits_mobilenet"),
        (["digits_resnet", "--dynamic", "nope:0=batch"], "--dynamic names 'nope', which is neither an input"),
        (["digits_resnet", "--input-shape", "input=1xx"], "--input-shape 'input=1xx': write NAME=DIMS"),
    ],
)
def test_cli_usage_errors_are_one_line(tmp_path, capsys, args, message):
    import re

    from edgeq.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["export", *args, "-o", str(tmp_path / "x.onnx")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgeq: error: ") and "\n" not in err and re.search(message, err)
    assert not (tmp_path / "x.onnx").exists()


def test_imports_stay_light():
    code = (
        "import sys, edgeq, edgeq.exporter, edgeq.cli.export\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    help_text = _edgeq("export", "--help")
    assert help_text.returncode == 0 and "--dynamic-batch" in help_text.stdout
