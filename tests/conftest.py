import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Every machine quantizes as one whose onnxruntime saturates 8-bit weight products (x86 without
# VNNI): weights of u8s8 kernels keep 7 bits everywhere, so that thresholds do not depend on the CPU
# the suite lands on (subprocesses inherit it). tests/runtime/test_cpu.py checks the measurement.
os.environ.setdefault("EDGEQ_INT8_SATURATES", "1")


@pytest.fixture(scope="session", autouse=True)
def _seven_bit_weights():
    """Static and dynamic modes on such a CPU build 7- and 8-bit weights and keep the better on the
    calibration samples (stages/weight_bits.py): which one wins depends on the real CPU. The suite
    keeps 7 bits (and one build), module-scoped fixtures included; a test marked weight_bits gets
    the choice back (``_weight_bits_marker``)."""
    from edgeq.auto import ceiling
    from edgeq.stages import weight_bits

    _CHOOSE.append(weight_bits.weight_bits_to_choose)
    _CEILING.append(ceiling.int8_ceiling)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(weight_bits, "weight_bits_to_choose", lambda config, prepared: False)
        # auto answers fp32 before its search where int8 everywhere times no faster than fp32
        # (auto/ceiling.py): on a CPU without VNNI that is most models, and the tests of the search
        # would test nothing there. The suite searches as on any CPU; a test marked speed_ceiling
        # gets the timing back (``_weight_bits_marker``).
        patch.setattr(ceiling, "int8_ceiling", lambda *args, **kwargs: None)
        yield


_CHOOSE: list = []  # the real weight_bits_to_choose, kept by _seven_bit_weights
_CEILING: list = []  # the real int8_ceiling, kept by _seven_bit_weights


@pytest.fixture(autouse=True)
def _weight_bits_marker(request, monkeypatch):
    if request.node.get_closest_marker("weight_bits") is not None:
        from edgeq.stages import weight_bits

        monkeypatch.setattr(weight_bits, "weight_bits_to_choose", _CHOOSE[0])
    if request.node.get_closest_marker("speed_ceiling") is not None:
        from edgeq.auto import ceiling

        monkeypatch.setattr(ceiling, "int8_ceiling", _CEILING[0])


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
