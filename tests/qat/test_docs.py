"""docs/qat.md's worked example runs as written and keeps its promise: a held-out top-1 it prints."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "qat.md"


def test_the_worked_example_runs(tmp_path):
    block = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0]
    (tmp_path / "example.py").write_text(block)
    proc = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r"held-out top-1: float ([0-9.]+), 4-bit model ([0-9.]+)", proc.stdout)
    float_top1, top1 = float(found.group(1)), float(found.group(2))
    assert float_top1 >= 0.93 and top1 >= float_top1 - 0.02
    assert (tmp_path / "digits.qat.onnx").exists()
