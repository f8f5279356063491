"""edgeq.auto.sensitivity and `edgeq sensitivity`: the outlier-dominated layer is found."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .nets import outlier_feeds, outlier_net


@pytest.fixture(scope="module")
def report():
    from edgeq.auto import sensitivity

    return sensitivity(outlier_net(), outlier_feeds(16), eval_data=outlier_feeds(8, seed=5), progress=False)


def test_outlier_layer_is_most_sensitive(report):
    names = [e["node"] for e in report.layers]
    assert len(names) == 3  # the three convs (Relu folded, pooling isolated)
    first = report.layers[0]
    assert first["op"] == "Conv" and first["outlier_dominated"] == ["x"]
    others = report.layers[1:]
    # Quantizing only conv1 (its input's range spent on the spikes) is far worse than any other.
    assert first["only_int8_sqnr_db"] < 25.0
    assert all(e["only_int8_sqnr_db"] > first["only_int8_sqnr_db"] + 10.0 for e in others)
    # Keeping it float buys the most.
    assert first["gain_if_float_db"] > 10.0
    assert first["all_but_sqnr_db"] > 30.0
    assert report.all_int8["min_sqnr_db"] < 25.0


def test_outlier_ratio_flags_only_the_spiky_input(report):
    flagged = [t["tensor"] for t in report.tensors if t["outlier_dominated"]]
    assert flagged == ["x"]
    assert report.tensors[0]["outlier_ratio"] > 20.0
    assert report.calibration["passes"] == 1 and report.calibration["num_samples"] == 16


def test_report_files(report, tmp_path):
    written = report.write(tmp_path / "sens.json")
    data = json.loads((tmp_path / "sens.json").read_text())
    assert data["format"] == "edgeq-sensitivity-report"
    assert [e["node"] for e in data["layers"]] == [e["node"] for e in report.layers]
    md = (tmp_path / "sens.md").read_text()
    assert report.layers[0]["node"] in md and "| x |" in md
    page = (tmp_path / "sens.html").read_text()
    assert page.count("<svg") == 1 and report.layers[0]["node"] in page
    assert len(written) == 3


def test_cli(tmp_path):
    import onnx

    from edgeq.cli.main import main

    onnx.save(outlier_net(), tmp_path / "m.onnx")
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, feed in enumerate(outlier_feeds(8)):
        np.savez(calib / f"{i:03d}.npz", **feed)
    with pytest.raises(SystemExit) as e:
        main(["sensitivity", str(tmp_path / "m.onnx"), "--calib", str(calib), "--report",
              str(tmp_path / "r.json"), "-q"])
    assert e.value.code in (0, None)
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["layers"][0]["outlier_dominated"] == ["x"]
    assert (tmp_path / "r.html").exists() and (tmp_path / "r.md").exists()


def test_cli_missing_model_is_one_line(tmp_path, capsys):
    from edgeq.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["sensitivity", str(tmp_path / "nope.onnx"), "--calib", str(tmp_path)])
    assert e.value.code in (1, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "nope.onnx" in err


def test_one_shot_generator_data_is_read_once_and_reused():
    from edgeq.auto import sensitivity

    report = sensitivity(outlier_net(), (feed for feed in outlier_feeds(16)), progress=False)
    # held in memory once, then split: 12 calibrate, the 4 held out score, as auto draws them
    assert report.calibration["num_samples"] == 12 and report.eval_samples == 4
    assert report.layers[0]["outlier_dominated"] == ["x"]
    assert any("calibration samples" in n for n in report.notes)
