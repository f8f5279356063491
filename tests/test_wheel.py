"""What `pip install` gives a user works (issue 20): the sdist and the wheel, built from the files
a clone has, the wheel installed into a fresh virtual environment with nothing else, and the
first commands run there as a user runs them.

The rest of the suite runs on an editable install with the dev extras, where other packages have
already imported what edgeq forgot to import, and where a top-level ``models`` package was a
folder of the repo. Here nothing but the wheel and its declared dependencies is installed:

1. ``python -m build``: the sdist, then the wheel from the sdist. The wheel holds one import
   package, ``edgeq`` (with the zoo's checkpoints and data), its dist-info with the license, and
   nothing else; the metadata of both validates (``packaging.metadata``, what ``twine check``
   validates for a Markdown readme) and says what users are told (license, Python versions,
   extras, the version of ``edgeq/_version.py``).
2. No extras: ``pip check``, ``edgeq --help``, ``edgeq quantize`` with calibration data,
   ``edgeq run``, ``edgeq inspect``, ``import edgeq.runtime`` -- none imports torch; ``edgeq
   export`` says to install the torch extra.
3. ``[torch]``: ``edgeq export kws`` and ``edgeq qat kws`` (a checkpoint from the package data, numpy data); the digits
   model's data needs scikit-learn, and the error says to install the zoo extra.
4. ``[zoo]``: ``edgeq export digits_mobilenet``.

Installs use constraints.txt (torch 2.13.0 from this machine's disk). Dependency wheels come from
pip's cache after the first run; about 3 minutes in all on 2 cores (timings: pytest -s).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeq._version import __version__

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
CHECKPOINTS = ("digits_mobilenet", "digits_resnet", "kws", "textdet", "vad")

# A small conv net (the weights are added below), big enough for int8 kernels to pay.
NET = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[batch, 16, 16, 16] input) => (float[batch, 32, 16, 16] output) {
    c1 = Conv <pads = [1, 1, 1, 1]> (input, w1, b1)
    r1 = Relu(c1)
    c2 = Conv <pads = [1, 1, 1, 1]> (r1, w2, b2)
    output = Relu(c2)
}
"""

pytestmark = pytest.mark.slow


class Steps:
    """Runs the steps of one user session, with what failed and how long each took."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd, self.times = env, cwd, {}

    def run(self, step: str, *cmd: object, ok: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        start = time.perf_counter()
        proc = subprocess.run([str(c) for c in cmd], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        self.times[step] = self.times.get(step, 0.0) + time.perf_counter() - start
        if (proc.returncode == 0) != ok:
            pytest.fail(f"{step}: `{' '.join(map(str, cmd))}` exited {proc.returncode}\n"
                        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", pytrace=False)
        return proc


def _clone(dst: Path) -> None:
    """The files a clone of this repo has (tracked and new, not ignored): no build/, egg-info or venv
    leftovers, so the sdist is what a user's ``pip install .`` builds from."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():  # a file deleted but not yet staged is still listed
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)


def _metadata(raw: bytes):
    from packaging.metadata import Metadata

    return Metadata.from_email(raw, validate=True)  # raises on any invalid field


def _check_dists(dist: Path) -> Path:
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert [w.name for w in wheels] == [f"edgeq-{__version__}-py3-none-any.whl"], wheels
    assert [s.name for s in sdists] == [f"edgeq-{__version__}.tar.gz"], sdists
    info = f"edgeq-{__version__}.dist-info"
    with zipfile.ZipFile(wheels[0]) as whl:
        names = whl.namelist()
        meta = _metadata(whl.read(f"{info}/METADATA"))
        top_level = whl.read(f"{info}/top_level.txt").decode().split() if f"{info}/top_level.txt" in names else []
    assert {n.split("/")[0] for n in names} == {"edgeq", info}, sorted({n.split("/")[0] for n in names})
    assert top_level in ([], ["edgeq"]), top_level
    for name in CHECKPOINTS:
        assert f"edgeq/zoo/checkpoints/{name}.pt" in names, name
    assert "edgeq/zoo/data/sentences.txt" in names and f"{info}/licenses/LICENSE" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".onnx"))]

    assert meta.name == "edgeq" and str(meta.version) == __version__
    assert meta.license_expression == "Apache-2.0" and meta.license_files == ["LICENSE"]
    assert str(meta.requires_python) == ">=3.10" and meta.description_content_type == "text/markdown"
    assert meta.description and meta.description.startswith("# edgeq")
    assert "Programming Language :: Python :: 3.11" in meta.classifiers
    assert {"torch", "zoo", "gpu", "dev", "cluster"} <= set(map(str, meta.provides_extra))

    with tarfile.open(sdists[0]) as sdist:
        members = sdist.getnames()
        base = f"edgeq-{__version__}"
        sdist_meta = _metadata(sdist.extractfile(f"{base}/PKG-INFO").read())
    assert str(sdist_meta.version) == __version__
    for name in ("LICENSE", "README.md", "pyproject.toml", "edgeq/zoo/checkpoints/kws.pt"):
        assert f"{base}/{name}" in members, name
    return wheels[0]


def _user_files(work: Path) -> None:
    """A float model and a folder of calibration feeds, as a user brings them."""
    rng = np.random.default_rng(0)
    model = onnx.parser.parse_model(NET)
    model.graph.initializer.extend([
        onnx.numpy_helper.from_array(rng.normal(0, 0.1, (32, 16, 3, 3)).astype(np.float32), "w1"),
        onnx.numpy_helper.from_array(rng.normal(0, 0.1, 32).astype(np.float32), "b1"),
        onnx.numpy_helper.from_array(rng.normal(0, 0.05, (32, 32, 3, 3)).astype(np.float32), "w2"),
        onnx.numpy_helper.from_array(rng.normal(0, 0.1, 32).astype(np.float32), "b2"),
    ])
    onnx.checker.check_model(model)
    onnx.save(model, work / "net.onnx")
    (work / "calib").mkdir()
    for i in range(8):
        np.savez(work / "calib" / f"{i:03d}.npz", input=rng.normal(size=(1, 16, 16, 16)).astype(np.float32))


def test_the_wheel_works_in_a_clean_venv(tmp_path):
    src, dist, work, venv = (tmp_path / d for d in ("src", "dist", "work", "venv"))
    for folder in (src, dist, work):
        folder.mkdir()
    _clone(src)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    build = Steps(env, tmp_path)
    build.run("build sdist + wheel", sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, src)
    wheel = _check_dists(dist)

    build.run("venv", sys.executable, "-m", "venv", venv)
    env = dict(env, VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    user = Steps(env, work)  # cwd: the user's folder, never the repo (no edgeq/ beside them)
    user.times.update(build.times)
    pip = (venv / "bin" / "python", "-m", "pip")
    python, edgeq = venv / "bin" / "python", venv / "bin" / "edgeq"

    # 2. no extras
    user.run("pip install wheel", *pip, "install", "-q", "-c", CONSTRAINTS, wheel)
    user.run("pip check", *pip, "check")
    probe = ("import importlib.util, sys, edgeq, edgeq.runtime\n"
             "assert importlib.util.find_spec('models') is None, 'a top-level models package is installed'\n"
             "assert importlib.util.find_spec('torch') is None\n"
             "print(edgeq.__version__, edgeq.__file__)")
    out = user.run("import edgeq.runtime", python, "-c", probe).stdout
    assert out.startswith(__version__) and str(venv) in out  # the installed copy, not a checkout
    out = user.run("edgeq --help", edgeq, "--help").stdout
    for command in ("export", "quantize", "run", "bench", "inspect", "compare", "profile", "sensitivity", "prepare"):
        assert f"  {command} " in out, command
    assert __version__ in user.run("edgeq --version", edgeq, "--version").stdout
    _user_files(work)
    # auto mode (the default with --calib) decides per layer; --mode static makes int8 for sure
    user.run("edgeq quantize", edgeq, "quantize", "net.onnx", "-o", "net.auto.onnx", "--calib", "calib",
             "--report", "report.json")
    assert (work / "net.auto.onnx").is_file() and (work / "report.json").is_file()
    user.run("edgeq quantize", edgeq, "quantize", "net.onnx", "-o", "net.int8.onnx", "--calib", "calib",
             "--mode", "static")
    out = user.run("edgeq run", edgeq, "run", "net.int8.onnx", "--inputs", "calib/000.npz").stdout
    assert "output" in out and "1x32x16x16" in out
    user.run("edgeq quantize --weights kmeans:4", edgeq, "quantize", "net.onnx", "-o", "net.k4.onnx",
             "--weights", "kmeans:4")  # compress mode: codebook weights, no data
    out = user.run("edgeq run compressed", edgeq, "run", "net.k4.onnx", "--inputs", "calib/000.npz").stdout
    assert "1x32x16x16" in out and (work / "net.k4.onnx").stat().st_size < (work / "net.int8.onnx").stat().st_size
    out = user.run("edgeq inspect", edgeq, "inspect", "net.int8.onnx").stdout
    assert "[batch, 16, 16, 16]" in out and "(100.0%)" in out  # every MAC in int8
    err = user.run("edgeq export without torch", edgeq, "export", "kws", "-o", "kws.onnx", ok=False).stderr
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        "edgeq: error: exporting from PyTorch needs torch, which is not installed: pip install 'edgeq[torch]'")
    err = user.run("edgeq qat without torch", edgeq, "qat", "kws", "-o", "kws.qat.onnx", ok=False).stderr
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        "edgeq: error: quantization-aware training needs torch, which is not installed: pip install 'edgeq[torch]'")
    err = user.run("edgeq quantize --cluster without ray", edgeq, "quantize", "net.onnx", "-o", "net.c.onnx", "--calib",
                   "calib", "--mode", "static", "--cluster", "local", ok=False).stderr
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        "edgeq: error: --cluster needs Ray, which is not installed: pip install 'edgeq[cluster]'")

    # 3. the torch extra: a zoo model whose data is numpy alone; the digits data needs the zoo extra
    user.run("pip install wheel[torch]", *pip, "install", "-q", "-c", CONSTRAINTS, f"{wheel}[torch]")
    user.run("pip check", *pip, "check")
    user.run("edgeq export kws", edgeq, "export", "kws", "-o", "kws.onnx")
    assert (work / "kws.onnx").is_file()
    out = user.run("edgeq qat kws", edgeq, "qat", "kws", "-o", "kws.qat.onnx", "--epochs", "1", "--samples", "32",
                   "--eval-samples", "8", "-q").stdout
    assert "export check" in out and (work / "kws.qat.onnx").is_file()
    err = user.run("edgeq export without the zoo extra", edgeq, "export", "digits_mobilenet", "-o", "d.onnx",
                   ok=False).stderr
    assert "needs scikit-learn" in err and "pip install 'edgeq[zoo]'" in err and "Traceback" not in err

    # 4. the zoo extra
    user.run("pip install wheel[zoo]", *pip, "install", "-q", "-c", CONSTRAINTS, f"{wheel}[zoo]")
    user.run("pip check", *pip, "check")
    out = user.run("edgeq export digits_mobilenet", edgeq, "export", "digits_mobilenet", "-o", "digits.onnx").stdout
    assert "max abs error" in out and (work / "digits.onnx").is_file()

    print("\n" + "\n".join(f"{seconds:6.1f} s  {step}" for step, seconds in user.times.items()))
