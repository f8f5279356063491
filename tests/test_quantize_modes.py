"""edgeq.quantize modes beyond static/dynamic: fp16 and auto, through the API and the CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import edgeq
from edgeq.cli.main import main
from edgeq.metrics import sqnr_db
from ortutil import op_types, run_ort
from passes.nets import conv_net, feeds


def test_fp16_mode_keeps_fp32_boundary_and_fidelity():
    data = feeds((1, 3, 16, 16), n=4, seed=3)
    result = edgeq.quantize(conv_net(), edgeq.QuantConfig(mode="fp16"), eval_data=data, progress=False)
    proto = onnx_ir_to_proto(result.model)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    assert "QuantizeLinear" not in op_types(proto) and op_types(proto).count("Cast") >= 2
    ref = np.concatenate([run_ort(conv_net(), f)[0] for f in data])
    got = np.concatenate([run_ort(proto, f)[0] for f in data])
    assert sqnr_db(ref, got) > 40
    report = result.report
    assert report["config"]["mode"] == "fp16" and report["evaluation"]["outputs"]["y"]["sqnr_db"] > 40
    assert report["summary"]["size_after_bytes"] <= 0.51 * report["summary"]["size_before_bytes"]


def onnx_ir_to_proto(model):
    import onnx_ir as ir

    return ir.to_proto(model)


def test_auto_mode_meets_its_target_and_says_why():
    data = feeds((1, 3, 16, 16), n=8)
    config = edgeq.QuantConfig(mode="auto", min_sqnr=25.0)
    result = edgeq.quantize(conv_net(), config, data, eval_data=feeds((1, 3, 16, 16), n=4, seed=5), progress=False)
    report = result.report
    assert report["config"]["mode"] == "auto" and report["config"]["min_sqnr"] == 25.0
    auto = report["auto"]
    assert auto["verdict"] and auto["layers"]
    assert all(layer["precision"] in ("int8", "fp32", "dynamic int8") and layer["why"] for layer in auto["layers"])
    if "int8" in {layer["precision"] for layer in auto["layers"]}:
        assert report["evaluation"]["outputs"]["y"]["sqnr_db"] >= 25.0
    else:  # fp32 came back: then it must be the float model, exactly
        ref = run_ort(conv_net(), data[0])[0]
        np.testing.assert_allclose(run_ort(result.model, data[0])[0], ref, rtol=1e-5, atol=1e-6)


def test_auto_needs_calibration_data():
    with pytest.raises(edgeq.UsageError, match="calibration data"):
        edgeq.quantize(conv_net(), edgeq.QuantConfig(mode="auto"))


def _write(folder, data):
    folder.mkdir()
    for i, feed in enumerate(data):
        np.savez(folder / f"{i}.npz", **feed)


def test_cli_auto_and_fp16(tmp_path, capsys):
    src = tmp_path / "net.onnx"
    onnx.save(conv_net(), src)
    _write(tmp_path / "calib", feeds((1, 3, 16, 16), n=8))
    _write(tmp_path / "heldout", feeds((1, 3, 16, 16), n=4, seed=9))
    for args, mode in ((["--auto", "--min-sqnr", "25", "--calib", str(tmp_path / "calib")], "auto"),
                       (["--mode", "fp16"], "fp16")):
        out, rep = tmp_path / f"{mode}.onnx", tmp_path / f"{mode}.json"
        with pytest.raises(SystemExit) as e:
            main(["quantize", str(src), "-o", str(out), "--eval", str(tmp_path / "heldout"),
                  "--report", str(rep), "-q", *args])
        assert e.value.code == 0, capsys.readouterr().err
        assert json.loads(rep.read_text())["config"]["mode"] == mode
        probe = feeds((1, 3, 16, 16), n=1, seed=11)[0]
        assert sqnr_db(run_ort(conv_net(), probe)[0], run_ort(str(out), probe)[0]) > 25
    text = capsys.readouterr().out
    assert "fp16" in text and "SQNR" in text
    with pytest.raises(SystemExit) as e:
        main(["quantize", str(src), "-o", str(tmp_path / "x.onnx"), "--auto", "--mode", "dynamic",
              "--calib", str(tmp_path / "calib")])
    assert e.value.code == 2
