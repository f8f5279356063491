"""`edgeq quantize` on the command line: default invocation, --config, errors."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

from edgeq.cli.main import main
from passes.nets import conv_net, feeds


@pytest.fixture
def model_and_calib(tmp_path):
    src = tmp_path / "net.onnx"
    onnx.save(conv_net(), src)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, feed in enumerate(feeds((1, 3, 16, 16), n=4)):
        np.savez(calib / f"{i}.npz", **feed)
    return src, calib


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_default_invocation_is_auto(model_and_calib, tmp_path, capsys):
    """With --calib and no --mode, auto mode decides; the model written is the one it chose:
    int8 (meeting 30 dB, not slower than fp32 where timed) or the fp32 model with a note."""
    from edgeq.metrics import sqnr_db
    from ortutil import run_ort

    src, calib = model_and_calib
    out, rep = tmp_path / "out.onnx", tmp_path / "r.json"
    code, stdout, err = _run(["quantize", str(src), "-o", str(out), "--calib", str(calib), "--report", str(rep), "-q"],
                             capsys)
    assert code == 0, err
    report = json.loads(rep.read_text())
    auto = report["auto"]
    assert report["config"]["mode"] == "auto" and auto["target"]["min_sqnr"] == 30.0
    assert f"auto: {auto['verdict']}" in stdout
    ops = [n.op_type for n in onnx.load(out).graph.node]
    if auto["chosen"] == "fp32":
        assert "QuantizeLinear" not in ops and "is the fp32 model" in err
    else:
        assert "QuantizeLinear" in ops and auto["fidelity"]["min_sqnr_db"] >= 30.0
    for feed in feeds((1, 3, 16, 16), n=2, seed=9):
        assert sqnr_db(run_ort(onnx.load(src), feed)[0], run_ort(onnx.load(out), feed)[0]) >= 30.0


def test_mode_static_is_uniform_int8(model_and_calib, tmp_path, capsys):
    src, calib = model_and_calib
    out = tmp_path / "out.onnx"
    code, stdout, _ = _run(["quantize", str(src), "-o", str(out), "--calib", str(calib), "--mode", "static", "-q"],
                           capsys)
    assert code == 0
    assert "9 nodes quantized" in stdout and "0 left float" in stdout and "auto:" not in stdout
    assert "QuantizeLinear" in [n.op_type for n in onnx.load(out).graph.node]


def test_config_file_and_flag_override(model_and_calib, tmp_path, capsys):
    src, calib = model_and_calib
    cfg = tmp_path / "q.toml"
    cfg.write_text('[quantize]\ngranularity = "per-tensor"\nexclude = ["Add"]\n')
    out, rep = tmp_path / "out.onnx", tmp_path / "r.json"
    code, _, err = _run(["quantize", str(src), "-o", str(out), "--calib", str(calib), "--config", str(cfg),
                         "--method", "percentile", "--report", str(rep), "-q"], capsys)
    assert code == 0, err
    report = json.loads(rep.read_text())
    assert report["config"]["granularity"] == "per-tensor" and report["config"]["method"] == "percentile"
    assert any(e["op"] == "Add" for e in report["float"])
    assert os.path.exists(tmp_path / "r.md")


def test_no_data_is_a_usage_error(model_and_calib, tmp_path, capsys):
    src, _ = model_and_calib
    code, _, err = _run(["quantize", str(src), "-o", str(tmp_path / "o.onnx")], capsys)
    assert code == 2 and "--calib" in err and "Traceback" not in err


def test_bad_method_is_rejected(model_and_calib, tmp_path, capsys):
    src, calib = model_and_calib
    code, _, err = _run(["quantize", str(src), "-o", str(tmp_path / "o.onnx"), "--calib", str(calib),
                         "--method", "magic"], capsys)
    assert code == 2 and "magic" in err


def test_output_over_input_is_refused(model_and_calib, capsys):
    src, calib = model_and_calib
    code, _, err = _run(["quantize", str(src), "-o", str(src), "--calib", str(calib)], capsys)
    assert code == 2 and "same file" in err


@pytest.mark.slow
def test_export_and_quantize_zoo_model(tmp_path, capsys):
    out, fp32, rep = tmp_path / "m.int8.onnx", tmp_path / "m.fp32.onnx", tmp_path / "report.json"
    # static: auto's answer depends on this CPU's speed (fp32 where int8 is slower: a CPU without VNNI)
    code, stdout, err = _run(["export-and-quantize", "digits_resnet", "-o", str(out), "--fp32-out", str(fp32),
                              "--report", str(rep), "--mode", "static", "-q"], capsys)
    assert code == 0, err
    assert "top-1 vs labels" in stdout and "latency 1 thread" in stdout and "file size" in stdout
    report = json.loads(rep.read_text())
    acc = report["evaluation"]["accuracy"]
    assert acc["int8"] >= acc["fp32"] - 0.005 and report["evaluation"]["num_samples"] >= 100
    assert os.path.getsize(out) < 0.5 * os.path.getsize(fp32)


def test_save_ranges_then_reuse_without_data(model_and_calib, tmp_path, capsys):
    src, calib = model_and_calib
    ranges, cache = tmp_path / "ranges.json", tmp_path / "calib.cache"
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    code, _, err = _run(["quantize", str(src), "-o", str(first), "--calib", str(calib), "--mode", "static",
                         "--save-ranges", str(ranges),
                         "--trt-cache", str(cache), "-q"], capsys)
    assert code == 0, err
    assert json.loads(ranges.read_text())["format"] == "edgeq-ranges" and cache.read_text().startswith("TRT-")
    code, _, err = _run(["quantize", str(src), "-o", str(second), "--ranges", str(ranges), "-q"], capsys)
    assert code == 0, err
    a = [onnx.numpy_helper.to_array(i) for i in onnx.load(first).graph.initializer if i.name.endswith("_scale")]
    b = [onnx.numpy_helper.to_array(i) for i in onnx.load(second).graph.initializer if i.name.endswith("_scale")]
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_auto_ranges_table_is_complete_and_reusable(model_and_calib, tmp_path, capsys):
    """Whatever auto chose (fp32 included), --save-ranges writes every calibrated tensor, so a
    later --ranges run (static: no data needed) can quantize every node."""
    src, calib = model_and_calib
    ranges = tmp_path / "ranges.json"
    code, _, err = _run(["quantize", str(src), "-o", str(tmp_path / "a.onnx"), "--calib", str(calib),
                         "--save-ranges", str(ranges), "-q"], capsys)
    assert code == 0, err
    assert "x" in json.loads(ranges.read_text())["ranges"]
    code, stdout, err = _run(["quantize", str(src), "-o", str(tmp_path / "b.onnx"), "--ranges", str(ranges), "-q"],
                             capsys)
    assert code == 0, err
    assert "9 nodes quantized" in stdout


def test_auto_report_renders_layers_and_tradeoff_chart(model_and_calib, tmp_path, capsys):
    src, calib = model_and_calib
    rep = tmp_path / "r.json"
    code, _, err = _run(["quantize", str(src), "-o", str(tmp_path / "o.onnx"), "--calib", str(calib),
                         "--report", str(rep), "-q"], capsys)
    assert code == 0, err
    report = json.loads(rep.read_text())
    md = (tmp_path / "r.md").read_text()
    assert "## Auto mode" in md and "### Per-layer precision" in md and report["auto"]["verdict"] in md
    assert all(e["node"] in md for e in report["auto"]["layers"])
    page = (tmp_path / "r.html").read_text()
    assert "<svg" in page and "Error vs latency" in page
    assert page.count("<circle") >= len([c for c in report["auto"]["configurations"] if c.get("latency_ms")])


def test_int16_and_fp16_nodes_from_the_command_line(model_and_calib, tmp_path, capsys):
    src, calib = model_and_calib
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    code, _, err = _run(["quantize", str(src), "-o", str(out), "--calib", str(calib), "--mode", "static",
                         "--report", str(rep), "-q"], capsys)
    names = [q["node"] for q in json.loads(rep.read_text())["quantized"] if q["op"] == "Conv"]  # as the report names them
    code, _, err = _run(["quantize", str(src), "-o", str(out), "--calib", str(calib), "--mode", "static",
                         "--int16-node", names[0], "--fp16-node", names[-1], "--report", str(rep), "-q"], capsys)
    assert code == 0, err
    report = json.loads(rep.read_text())
    assert report["config"]["precision"] == {names[0]: "int16", names[-1]: "fp16"}
    model = onnx.load(out)
    q16 = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.domain == "com.microsoft"]
    assert q16 and any(n.op_type == "Cast" for n in model.graph.node)
    same = tmp_path / "same.onnx"  # --precision NODE=PREC is the one map the three flags fill
    code, _, err = _run(["quantize", str(src), "-o", str(same), "--calib", str(calib), "--mode", "static",
                         "--precision", f"{names[0]}=int16", "--precision", f"{names[-1]}=FP16", "-q"], capsys)
    assert code == 0, err and onnx.load(same).SerializeToString() == model.SerializeToString()
    code, _, err = _run(["quantize", str(src), "-o", str(same), "--calib", str(calib), "--mode", "static",
                         "--precision", f"{names[0]}=int4", "-q"], capsys)
    assert code == 2 and "must be one of fp32, fp16, int16" in err
    code, _, err = _run(["quantize", str(src), "-o", str(tmp_path / "p.onnx"), "--calib", str(calib),
                         "--int16-node", "nope", "-q"], capsys)
    assert code == 2 and "nope" in err
