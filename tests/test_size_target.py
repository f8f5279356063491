"""Compress mode with a size target (stages/size_target.py, ``--max-size``): the file within the
limit, per-layer widths that beat one width for all at that size, a forecast that the
measurement confirms, and clear errors for a limit no width meets or a malformed one."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import edgeq
from edgeq.config import QuantConfig, default_mode, parse_size_target
from edgeq.errors import UsageError
from edgeq.metrics import sqnr_db
from ortutil import cli_ok, run_ort
from passes.nets import FOUR_CONVS, build, feeds


def _net() -> onnx.ModelProto:
    """Convs of very different sensitivity: a wide stem, two 32-channel 3x3 Convs, a 1x1 and a head."""
    rng = np.random.default_rng(7)
    return build(FOUR_CONVS, {"W0": rng.normal(0, 0.3, (32, 3, 3, 3)), "B0": rng.normal(0, 0.1, 32),
       "W1": rng.normal(0, 0.08, (32, 32, 3, 3)), "B1": rng.normal(0, 0.1, 32),
       "W2": rng.normal(0, 0.08, (32, 32, 3, 3)), "B2": rng.normal(0, 0.1, 32),
       "W3": rng.normal(0, 0.2, (32, 32, 1, 1)), "B3": rng.normal(0, 0.1, 32),
       "G": rng.normal(0, 0.3, (10, 32)), "GB": rng.normal(0, 0.1, 10)})


def _sqnr(proto, path, test) -> float:
    ref = np.concatenate([run_ort(proto, f)[0] for f in test])
    got = np.concatenate([run_ort(str(path), f)[0] for f in test])
    return sqnr_db(ref, got)


def test_size_target_config_rules():
    assert default_mode(has_data=True, max_size="6x") == "compress"
    assert QuantConfig(mode="compress", max_size="6X").weights == "kmeans:8" and parse_size_target("6x") == ("ratio", 6.0)
    assert parse_size_target("2.5") == ("mb", 2.5) == parse_size_target("2.5MB")
    for bad in ("0x", "1x", "abc", "-2", "inf"):
        with pytest.raises(UsageError, match="--max-size takes"):
            QuantConfig(mode="compress", max_size=bad)
    with pytest.raises(UsageError, match="compress mode's"):
        QuantConfig(mode="static", max_size="6x")


def test_the_file_fits_and_mixed_widths_beat_one_width(tmp_path):
    proto, data, test = _net(), feeds((1, 3, 16, 16), n=8), feeds((1, 3, 16, 16), n=8, seed=5)
    onnx.save(proto, tmp_path / "m.onnx")
    size = (tmp_path / "m.onnx").stat().st_size
    uniform = edgeq.quantize(str(tmp_path / "m.onnx"), QuantConfig(mode="compress", weights="kmeans:4"), progress=False)
    uniform.save(tmp_path / "k4.onnx")
    limit = (tmp_path / "k4.onnx").stat().st_size  # the size of 4 bits everywhere
    result = edgeq.quantize(str(tmp_path / "m.onnx"), QuantConfig(mode="compress", max_size=f"{size / limit:.4f}x"),
                            data, progress=False)
    result.save(tmp_path / "t.onnx")
    target = result.report["compress"]["size_target"]
    assert (tmp_path / "t.onnx").stat().st_size <= size / round(size / limit, 4) + 1
    assert target["bytes"] == (tmp_path / "t.onnx").stat().st_size
    assert len(set(target["plan"].values())) > 1  # widths differ per layer
    measured = _sqnr(proto, tmp_path / "t.onnx", test)
    assert measured > _sqnr(proto, tmp_path / "k4.onnx", test) + 0.3  # better than one width, same size
    assert abs(target["sqnr_db"] - measured) < 3.0  # what it states on its samples holds on others
    assert target["predicted_sqnr_db"] is not None
    assert result.report["notes"][0].startswith("--max-size")


def test_kmeans_n_caps_the_widths_and_no_data_still_fits(tmp_path):
    proto = _net()
    onnx.save(proto, tmp_path / "m.onnx")
    result = edgeq.quantize(str(tmp_path / "m.onnx"), QuantConfig(mode="compress", weights="kmeans:5", max_size="5x"),
                            progress=False)
    target = result.report["compress"]["size_target"]
    assert max(target["plan"].values()) <= 5 and target["predicted_sqnr_db"] is None and "sqnr_db" not in target
    assert "pass --calib" in target["sensitivity"]
    result.save(tmp_path / "t.onnx")
    assert (tmp_path / "t.onnx").stat().st_size <= (tmp_path / "m.onnx").stat().st_size / 5


def test_cli_size_target_and_a_limit_no_width_meets(tmp_path, capsys):
    from edgeq.cli.main import main

    onnx.save(_net(), tmp_path / "m.onnx")
    out = cli_ok(["quantize", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "t.onnx"), "--max-size", "6x"], capsys)
    assert "--max-size 6x:" in out and "weights searched" in out
    with pytest.raises(SystemExit) as e:
        main(["quantize", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "u.onnx"), "--max-size", "40x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "cannot be met" in err and "Traceback" not in err
    assert not (tmp_path / "u.onnx").exists()
