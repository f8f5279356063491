"""The hostile corpus (issue 14) through the CLI: a clean error every time, nothing lost.

For every case of ``corpus.CASES`` and every command that reads the changed part (``quantize``
default and ``--mode static``, ``prepare``, ``inspect``, ``run``), in process:

* it ends (no hang: 60 s at most) with exit 1 or 2, or 0 where the input is valid;
* no traceback, and an error is one line, ``edgeq: error: ...``;
* no input changed (hashes before and after), nothing written outside the output folder, and
  no output at all after an error (no partial file; ``prepare`` never writes an invalid model).

About 20 s on two cores. ``python tests/hostile/corpus.py DIR`` writes the cases to try by hand.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from hostile.corpus import CASES, commands
from hostile.runner import run_cli


def _snapshot(root: Path, skip: Path) -> dict[str, str]:
    """Hash of every regular file under ``root`` but ``skip`` (FIFOs and devices are never read)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        if Path(folder) == skip:
            dirs[:] = []
            continue
        for name in files:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and os.path.realpath(path).startswith(str(root)):
                with open(path, "rb") as f:
                    found[path] = hashlib.sha256(f.read()).hexdigest()
            else:
                found[path] = "not a regular file"
    return found


# cases whose model the entry check passes: quantize refuses them for their data or config
INSPECT_VALID = {"input-dim-2-pow-40"}


def _allowed_codes(case, label: str) -> set[int]:
    if label in case.ok_in:
        return {0, 1, 2}
    return {0} if case.expect == "ok" else {1, 2}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case(tmp_path, name):
    case = CASES[name]
    folder = tmp_path / "case"
    folder.mkdir()
    setup = case.build(folder)
    out = tmp_path / "out"
    before = _snapshot(tmp_path, out)
    for label, argv in commands(case, setup, out):
        code, stdout, stderr, _ = run_cli(argv, timeout=60)
        where = f"{name} / {label}: {' '.join(argv)}\n{stderr}"
        assert code is not None, f"hung: {where}"
        assert "Traceback" not in stdout + stderr, where
        assert code in _allowed_codes(case, label), where
        written = sorted(p.name for p in out.rglob("*")) if out.exists() else []
        if code:
            errors = [line for line in stderr.splitlines() if line.startswith("edgeq: error:")]
            others = [line for line in stderr.splitlines() if line.strip() and not line.startswith(("WARNING", "note:"))]
            assert len(errors) == 1 and others == errors, where
            assert written == [], f"an output after an error: {written}: {where}"
        else:
            assert set(written) <= {"q.onnx", "p.onnx"}, where
            if label == "inspect" and case.expect != "ok" and name not in INSPECT_VALID:
                assert "warning:" in stderr, f"described an invalid model without a word: {where}"
        for path in out.glob("*"):
            path.unlink()
        assert _snapshot(tmp_path, out) == before, f"an input changed or a file appeared: {where}"


def test_corpus_is_large_enough():
    assert len(CASES) >= 60
    assert {case.kind for case in CASES.values()} == {"model", "data", "config", "ranges"}
