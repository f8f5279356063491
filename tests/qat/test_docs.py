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
    top1 = float(re.search(r"held-out top-1 of the 4-bit model: ([0-9.]+)", proc.stdout).group(1))
    assert top1 >= 0.9
    assert (tmp_path / "digits.qat.onnx").exists()
