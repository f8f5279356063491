"""Seeded fuzzing (issue 14 item 6): the bytes of a valid model and a valid ``.npz`` mutated (a few
bytes changed, sometimes cut short), through ``inspect`` and ``quantize --mode static``. Every
run ends with exit 0 or a clean one-line error; none is an "internal error", a traceback or a hang."""

from __future__ import annotations

import numpy as np
import pytest
from rt_nets import conv_net

from hostile.runner import run_cli

CASES = 200  # x 3 commands: about 10 s on two cores


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(rng.integers(1, 8)):
        b[rng.integers(0, len(b))] = rng.integers(0, 256)
    if rng.random() < 0.2:
        b = b[: rng.integers(1, len(b))]
    return bytes(b)


@pytest.mark.parametrize("chunk", range(4))
def test_mutated_models_and_feeds_give_clean_errors(tmp_path, chunk):
    rng = np.random.default_rng(chunk)
    model = conv_net()[0].SerializeToString()
    np.savez(tmp_path / "good.npz", x=np.ones((1, 3, 8, 8), np.float32))
    feeds = (tmp_path / "good.npz").read_bytes()
    m, c, out = tmp_path / "m.onnx", tmp_path / "c.npz", tmp_path / "out" / "q.onnx"
    for case in range(CASES // 4):
        m.write_bytes(_mutate(model, rng))
        c.write_bytes(_mutate(feeds, rng))
        for argv in (["inspect", m], ["quantize", m, "-o", out, "--calib", tmp_path / "good.npz", "--mode", "static", "-q"],
                     ["quantize", m, "-o", out, "--calib", c, "--mode", "static", "-q"]):
            code, stdout, stderr, _ = run_cli([str(a) for a in argv], timeout=60)
            where = f"seed {chunk} case {case}: {argv[0]}\n{stderr}"
            assert code is not None, f"hung: {where}"
            assert "Traceback" not in stdout + stderr and "internal error" not in stderr, where
            assert code in (0, 1, 2), where
            if code:
                assert stderr.strip().splitlines()[-1].startswith("edgeq: error: "), where
                assert not out.exists(), where
            out.unlink(missing_ok=True)
