"""bench/gpu_providers.py end to end on the built-in conv net: --prepare, then the GPU mode
(which flags CUDA as FELL BACK on a machine without it instead of reporting CPU figures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "gpu_providers.py")


def test_prepare_then_run(tmp_path):
    folder = tmp_path / "gpu"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    prep = subprocess.run([sys.executable, SCRIPT, "--prepare", str(folder), "--models", "", "--smoke"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert prep.returncode == 0, prep.stderr
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["models"][0]
    assert entry["name"] == "smoke_convnet" and sorted(entry["files"]) == ["fp16", "fp32", "int8"]
    assert entry["input_shapes"] == {"x": [8, 3, 64, 64]}
    out = tmp_path / "rows.json"
    run = subprocess.run([sys.executable, SCRIPT, str(folder), "--runs", "1", "--iters", "3", "--warmup", "1",
                          "--json", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 3 * 2 * 2 + 2  # variants x (cuda, cpu) x batches, + cuda-strict for fp32
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    for r in rows:
        if r["provider"].startswith("cuda"):
            assert r["fell_back"] is (not has_cuda)
        limit = {"fp32": 60, "fp16": 40, "int8": 25}[r["variant"]]
        assert r["sqnr_vs_fp32_db"] > limit, r
    assert "| smoke_convnet | int8 | cpu (CPU) | 8 |" in run.stdout
    if not has_cuda:
        assert "FELL BACK" in run.stdout
