"""``--method tail``: min/max extrapolated to data calibration has not seen (calibrate/methods.py)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.calibrate.methods import choose_range
from edgeq.calibrate.observers import HistogramObserver, MinMaxObserver


def _observe(obs, batches):
    for b in batches:
        obs.update(b)
    return obs


def _batches(rng, n, scale_spread=0.3):
    """Post-ReLU-like activations whose per-sample scale varies (some inputs are louder)."""
    return [np.maximum(rng.normal(0, 1, 4096), 0) * rng.lognormal(0, scale_spread) for _ in range(n)]


@pytest.mark.parametrize("observer", [MinMaxObserver, HistogramObserver])
def test_tail_covers_the_next_samples_more_often_than_minmax(observer):
    rng = np.random.default_rng(0)
    covered = {"minmax": 0, "tail": 0}
    widened = []
    for _ in range(40):
        obs = _observe(observer("t"), _batches(rng, 32))
        later = max(float(b.max()) for b in _batches(rng, 64))  # the next 64 samples
        for method in covered:
            lo, hi, summary = choose_range(obs, method)
            covered[method] += hi >= later
            assert lo == obs.min == 0.0  # one-sided: nothing to extrapolate below
        _, hi, summary = choose_range(obs, "tail")
        assert hi >= obs.max and summary["hi_widened"] == pytest.approx(hi / obs.max)
        widened.append(hi / obs.max)
    # the max of 64 fresh samples: minmax (the max of 32) covers it about 1 time in 3, the expected
    # max over 64 from the Gumbel fit about 4 in 7 (16 and 22 of 40 here)
    assert covered["tail"] >= covered["minmax"] + 5
    assert 1.0 <= np.median(widened) < 1.5  # a modest widening, not a blanket one


def test_tail_extends_both_sides_of_a_signed_tensor_and_not_a_steady_one():
    rng = np.random.default_rng(1)
    signed = _observe(MinMaxObserver(), [rng.normal(0, 1, 4096) * rng.lognormal(0, 0.3) for _ in range(32)])
    lo, hi, _ = choose_range(signed, "tail")
    assert lo < signed.min and hi > signed.max
    steady = _observe(MinMaxObserver(), [np.linspace(-2, 3, 100) for _ in range(32)])  # the same every batch
    assert choose_range(steady, "tail")[:2] == (-2.0, 3.0)
    few = _observe(MinMaxObserver(), [rng.normal(0, 1, 100) for _ in range(3)])  # too few batches to fit
    assert choose_range(few, "tail")[:2] == (few.min, few.max)
