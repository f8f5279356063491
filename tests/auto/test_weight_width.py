"""Auto's weight width on a CPU that saturates 8-bit products (edgeq/auto/weight_width.py): the
width static mode would measure, taken by every build of the search."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.runtime import cpu
from ortutil import int8_pays_timing, weight_width

from .nets import outlier_feeds, outlier_net


def _conv_weight_levels(model) -> int:
    """The largest |level| of the int8 weights the model's Convs read (through DequantizeLinear)."""
    from edgeq.graph import all_nodes

    levels = 0
    for node in all_nodes(model.graph):
        if node.op_type != "DequantizeLinear" or node.inputs[0].const_value is None:
            continue
        if not any(c.op_type == "Conv" for v in node.outputs for c in v.consumers()):
            continue
        array = node.inputs[0].const_value.numpy()
        if array.dtype == np.int8 and array.ndim == 4:
            levels = max(levels, int(np.abs(array.astype(np.int32)).max()))
    return levels


@pytest.mark.weight_bits
@pytest.mark.parametrize("eight_wins", [True, False])
def test_auto_takes_the_measured_weight_width(monkeypatch, eight_wins):
    from edgeq.auto import auto_quantize, latency
    from edgeq.stages import weight_bits

    monkeypatch.setenv("EDGEQ_INT8_SATURATES", "1")
    monkeypatch.setattr(latency, "measure", int8_pays_timing)  # widths, not timings, are the subject
    scores = [(20.0, 20.0), (40.0, 40.0)] if eight_wins else [(40.0, 40.0), (20.0, 20.0)]  # (7 bits, 8 bits)
    seen = []

    def width_scores(reference, models, feeds):
        seen.append(len(feeds))
        return scores

    monkeypatch.setattr(weight_bits, "width_scores", width_scores)
    result = auto_quantize(outlier_net(), outlier_feeds(16), min_sqnr=20.0, progress=False)
    auto = result.report["auto"]
    assert seen == [12]  # once, on the samples range calibration read (12 of 16: a quarter held out)
    notes = [n for n in auto["notes"] if n.startswith("weights of u8s8 kernels")]
    small = "8 bits with pairs limited" if cpu.pairs_exact() else "7 bits"  # the narrower build (weights.pairs_form)
    assert len(notes) == 1 and notes[0].startswith(f"weights of u8s8 kernels: {'8 bits,' if eight_wins else small}")
    names = [c["name"] for c in auto["configurations"]]
    assert ("int8 uniform minmax, 8-bit weights" in names) == eight_wins  # the 8-bit build replaces the 7-bit one
    assert ("int8 uniform minmax" in names) != eight_wins
    assert auto["verdict"].startswith("int8"), auto["verdict"]
    # every build after the choice has its width
    assert weight_width(result.model) == ("8 bits" if eight_wins else "paired" if cpu.pairs_exact() else "7 bits")


@pytest.mark.weight_bits
def test_no_choice_where_the_width_is_given_or_the_cpu_does_not_saturate(monkeypatch):
    """--reduce-range / --no-reduce-range decide, and a CPU with VNNI keeps 8 bits: nothing measured."""
    from edgeq.auto import auto_quantize, latency
    from edgeq.config import QuantConfig
    from edgeq.stages import weight_bits

    monkeypatch.setattr(latency, "measure", int8_pays_timing)
    monkeypatch.setattr(weight_bits, "width_scores", lambda *a: pytest.fail("measured"))
    for saturates, config in (("1", QuantConfig(reduce_range=True)), ("1", QuantConfig(reduce_range=False)),
                              ("0", QuantConfig())):
        monkeypatch.setenv("EDGEQ_INT8_SATURATES", saturates)
        result = auto_quantize(outlier_net(), outlier_feeds(16), min_sqnr=20.0, progress=False, config=config)
        auto = result.report["auto"]
        assert not any(n.startswith("weights of u8s8 kernels:") for n in auto["notes"])
        levels = _conv_weight_levels(result.model)
        assert (levels <= 63) == (config.reduce_range is True)  # 7 bits asked; else 8 (no saturation, or asked)


@pytest.mark.weight_bits
def test_a_build_of_dynamic_matmuls_only_keeps_7_bits_unmeasured(monkeypatch):
    """Every weighted node dynamic or per token (a transformer's MatMuls): run-time activation codes
    spread over 0-255 saturate with 8-bit weights; 7 bits stay without the two extra passes."""
    from edgeq.auto import auto_quantize, latency
    from edgeq.auto.weight_width import _static_int8
    from edgeq.stages import weight_bits

    from .nets import DYNAMIC_NET, build

    monkeypatch.setenv("EDGEQ_INT8_SATURATES", "1")
    monkeypatch.setattr(latency, "measure", int8_pays_timing)
    monkeypatch.setattr(weight_bits, "width_scores", lambda *a: pytest.fail("measured"))
    rng = np.random.default_rng(5)
    model = build(DYNAMIC_NET, {w: rng.normal(0, 0.25, (64, 64)) for w in ("W1", "W2", "W3")})
    feeds = [{"x": rng.standard_normal((4, 64)).astype(np.float32)} for _ in range(16)]
    result = auto_quantize(model, feeds, min_sqnr=20.0, progress=False)
    auto = result.report["auto"]
    uniform = [c for c in auto["configurations"] if c["name"] == "int8 uniform minmax"]
    assert uniform and not any(n.startswith("weights of u8s8 kernels:") for n in auto["notes"])
    assert not _static_int8(result.model)
