"""`import edgeq`, `import edgeq.runtime` and `edgeq --help` stay light (no torch; runtime: no onnx_ir)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

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


NO_TORCH = """
import sys, importlib.abc
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch' (blocked: edgeq without [torch])")
sys.meta_path.insert(0, _NoTorch())
"""


def test_quantize_and_run_work_without_torch(tmp_path):
    """`pip install edgeq` (no torch): prepare, calibrate, quantize, save, run, all torch-free."""
    code = NO_TORCH + f"""
import numpy as np, onnx
import onnx.helper as oh, onnx.numpy_helper as onh
import edgeq
from edgeq.runtime import Session
rng = np.random.default_rng(0)
w = onh.from_array(rng.normal(0, 0.2, (8, 3, 3, 3)).astype(np.float32), "w")
g = oh.make_graph([oh.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), oh.make_node("Relu", ["c"], ["y"])],
                  "g", [oh.make_tensor_value_info("x", 1, [1, 3, 16, 16])],
                  [oh.make_tensor_value_info("y", 1, [1, 8, 16, 16])], [w])
m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])
data = [{{"x": rng.normal(size=(1, 3, 16, 16)).astype(np.float32)}} for _ in range(8)]
r = edgeq.quantize(m, None, data, progress=False)
r.save(r"{tmp_path}/q.onnx")
out = Session(r"{tmp_path}/q.onnx").run(data[0])["y"]
ref = Session(m).run(data[0])["y"]
sqnr = 10 * np.log10((ref ** 2).sum() / ((ref - out) ** 2).sum())
print("torch" in sys.modules, round(float(sqnr), 1))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded, sqnr = proc.stdout.split()
    assert loaded == "False" and float(sqnr) > 30


def test_every_command_loads_as_from_a_wheel():
    """`edgeq --help` and each command's --help with no .pth file run (``python -S``), as in a
    fresh install of the wheel: here the editable install's finder imports ``importlib.util``,
    which hid a ``importlib.util.find_spec`` call without its import (issue 20). tests/test_wheel.py
    checks the real wheel; this is the quick canary."""
    code = (f"import sys; sys.path[:0] = [{str(ROOT)!r}]; sys.path.append({sysconfig.get_paths()['purelib']!r})\n"
            "from edgeq.cli.main import COMMANDS, cli\n"
            "for args in [['--help'], *([name, '--help'] for name in COMMANDS)]:\n"
            "    try:\n"
            "        cli.main(args=args, prog_name='edgeq')\n"
            "    except SystemExit as e:\n"
            "        assert e.code == 0, (args, e.code)\n")
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Commands" in proc.stdout
