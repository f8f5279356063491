"""Every code block of the README runs, in order, in a fresh folder, as a user would run it.

The first block (``make demo`` / ``make test``) is the set-up itself: ``make demo`` runs in its
own test below; ``make test`` is what runs this suite, so it is not run again from here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    return [(lang, body) for lang, body in BLOCK.findall((ROOT / "README.md").read_text())]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def test_readme_opens_with_the_two_setup_commands():
    lang, first = _blocks()[0]
    commands = [line.split("#")[0].strip() for line in first.splitlines() if line.strip()]
    assert lang == "sh" and commands == ["make demo", "make test"]


@pytest.mark.slow
def test_readme_blocks_run(tmp_path):
    blocks = _blocks()[1:]
    ran = 0
    for lang, body in blocks:
        if lang == "sh":
            for line in body.splitlines():
                if not line.strip() or line.startswith("#"):
                    continue
                proc = subprocess.run(line, shell=True, cwd=tmp_path, env=_env(), capture_output=True,
                                      text=True, timeout=600)
                assert proc.returncode == 0, f"README command failed: {line}\n{proc.stdout}\n{proc.stderr}"
                ran += 1
        elif lang == "python":
            proc = subprocess.run([sys.executable, "-c", body], cwd=tmp_path, env=_env(),
                                  capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"README python block failed:\n{body}\n{proc.stderr}"
            ran += 1
    assert ran >= 10
    # what the README promises is there
    for name in ("digits.int8.onnx", "report.json", "report.md", "bench.json", "compare-report/report.html",
                 "digits.qop.onnx", "digits.p9999.int8.onnx", "digits.k4.onnx", "digits.small.onnx"):
        assert (tmp_path / name).is_file(), name


@pytest.mark.slow
def test_make_demo(tmp_path):
    """`make demo` on the installed environment: export, quantize, fp32-vs-int8 figures."""
    venv = Path(sys.executable).parent.parent
    out = tmp_path / "demo"
    proc = subprocess.run(["make", "-C", str(ROOT), "demo", f"VENV={venv}", f"DEMO={out}"],
                          env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "top-1 vs labels" in proc.stdout and "SQNR" in proc.stdout
    assert (out / "digits_mobilenet.int8.onnx").is_file() and (out / "bench.json").is_file()
