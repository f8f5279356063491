"""`import edgeq`, `import edgeq.runtime` and `edgeq --help` stay light (no torch; runtime: no onnx_ir)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = "import sys; {code}; print(sorted(m for m in ('torch', 'onnx_ir') if m in sys.modules))"

CASES = {
    "import edgeq": ("import edgeq", []),
    "import edgeq.runtime": ("import edgeq.runtime", []),
    # using the runtime for real: a session, a run, random feeds and a bench in this process
    "runtime in use": (
        "import onnx, numpy as np; from edgeq.runtime import Session; from edgeq.runtime.bench import bench; "
        "m = onnx.parser.parse_model('<ir_version: 8, opset_import: [\"\" : 17]> g (float[N] x) => (float[N] y)"
        " { y = Relu(x) }'); s = Session(m); s.run({'x': np.ones(3, np.float32)}); s.output_specs",
        [],
    ),
    "edgeq --help": ("sys.argv = ['edgeq', '--help']\ntry:\n    import edgeq.cli.main as m; m.main()\n"
                     "except SystemExit:\n    pass", None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_light_imports(case):
    code, allowed = CASES[case]
    proc = subprocess.run([sys.executable, "-c", PROBE.format(code=code)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = eval(proc.stdout.strip().splitlines()[-1])
    assert "torch" not in loaded
    if allowed is not None:  # runtime: no onnx_ir either
        assert loaded == allowed


def test_python_m_edgeq_help_is_light():
    code = ("import runpy, sys; sys.argv = ['edgeq', '--help']\ntry:\n    runpy.run_module('edgeq', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print(sorted(m for m in ('torch', 'onnx_ir') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Commands" in proc.stdout
    assert "torch" not in proc.stdout.strip().splitlines()[-1]
