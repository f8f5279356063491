"""``edgeq prepare`` and the loading rules it relies on (external data must stay in the folder)."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgeq.cli.main import main
from edgeq.errors import ModelLoadError
from edgeq.io import load_model
from ortutil import op_types, run_ort

OPSET11 = """
<ir_version: 6, opset_import: ["" : 11]>
g (float[N,3,4,4] x) => (float[N,2,4,4] y) {
  w = Constant <value = float[2,3,1,1] {1,2,3,4,5,6}> ()
  c = Conv(x, w)
  y = Relu(c)
}
"""


def _edgeq(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_cli_prepare_writes_model_and_prints_notes(tmp_path, capsys, rng):
    src, dst = tmp_path / "in.onnx", tmp_path / "out" / "prepared.onnx"
    onnx.save(onnx.parser.parse_model(OPSET11), src)
    code, out, _ = _edgeq(capsys, "prepare", str(src), "-o", str(dst))
    assert code == 0
    assert "check: [limit] opset 11" in out
    assert "prepare: opset upgraded from 11 to 13" in out
    prepared = onnx.load(dst)
    assert op_types(prepared) == ["Conv", "Relu"] and prepared.opset_import[0].version == 13
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(run_ort(prepared, {"x": x})[0], run_ort(str(src), {"x": x})[0])


def test_cli_prepare_calib_feeds_fill_unknown_shapes(tmp_path, capsys, rng):
    src, dst, calib = tmp_path / "in.onnx", tmp_path / "out.onnx", tmp_path / "calib"
    onnx.save(
        onnx.parser.parse_model(
            """
            <ir_version: 8, opset_import: ["" : 13, "com.microsoft" : 1]>
            g (float[2,4] x) => (float[2,4] y) { a = com.microsoft.Gelu(x)  y = Relu(a) }
            """
        ),
        src,
    )
    calib.mkdir()
    np.savez(calib / "0.npz", x=rng.standard_normal((2, 4)).astype(np.float32))
    code, out, _ = _edgeq(capsys, "prepare", str(src), "-o", str(dst), "--calib", str(calib))
    assert code == 0 and "inferred by running the model on 1 feed(s)" in out


def test_cli_prepare_refuses_to_overwrite_input(tmp_path, capsys):
    src = tmp_path / "in.onnx"
    onnx.save(onnx.parser.parse_model(OPSET11), src)
    code, _, err = _edgeq(capsys, "prepare", str(src), "-o", str(src))
    assert code == 2 and "same file as input" in err and "Traceback" not in err


def test_cli_prepare_unconvertible_operator_is_one_line_error(tmp_path, capsys):
    src = tmp_path / "in.onnx"
    onnx.save(
        onnx.parser.parse_model(
            '<ir_version: 6, opset_import: ["" : 11]> g (float[2] x) => (float[2] y) { y = FooBar(x) }'
        ),
        src,
    )
    code, _, err = _edgeq(capsys, "prepare", str(src), "-o", str(tmp_path / "o.onnx"))
    assert code == 2 and "FooBar" in err and len(err.strip().splitlines()) == 1  # bad input (issue 14)
    assert not (tmp_path / "o.onnx").exists()


def test_external_data_outside_model_folder_is_refused(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (tmp_path / "x.data").write_bytes(np.ones(4, np.float32).tobytes())
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../x.data"), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        initializer=[weight],
    )
    path = model_dir / "m.onnx"
    with open(path, "wb") as f:
        f.write(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString())
    with pytest.raises(ModelLoadError, match=r"\.\./x\.data.*outside the model's folder"):
        load_model(path)
    assert os.path.exists(tmp_path / "x.data")


def test_cli_prepare_calib_with_wrong_input_name_is_usage_error(tmp_path, capsys):
    src, calib = tmp_path / "in.onnx", tmp_path / "bad.npz"
    onnx.save(onnx.parser.parse_model(OPSET11), src)
    np.savez(calib, nope=np.zeros((1, 3, 4, 4), np.float32))
    code, _, err = _edgeq(capsys, "prepare", str(src), "-o", str(tmp_path / "o.onnx"), "--calib", str(calib))
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists()


def test_cli_prepare_check_only_lists_findings_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "in.onnx"
    onnx.save(onnx.parser.parse_model(OPSET11), src)
    code, out, _ = _edgeq(capsys, "prepare", str(src), "--check-only")
    assert code == 0
    assert "check: [info] Conv: 1 weight(s) come from Constant nodes" in out
    assert "prepare:" not in out and sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]
    code, _, err = _edgeq(capsys, "prepare", str(src))
    assert code == 2 and "-o OUT.onnx" in err
