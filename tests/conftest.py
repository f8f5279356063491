import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Every machine quantizes as one whose onnxruntime saturates 8-bit weight products (x86 without
# VNNI): weights of u8s8 kernels keep 7 bits everywhere, so that thresholds do not depend on the CPU
# the suite lands on (subprocesses inherit it). tests/runtime/test_cpu.py checks the measurement.
os.environ.setdefault("EDGEQ_INT8_SATURATES", "1")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
