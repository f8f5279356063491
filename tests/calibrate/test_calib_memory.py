"""Peak memory of calibration does not grow with the number of samples (a subprocess per run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = os.path.join(os.path.dirname(__file__), "memprobe.py")


def _peak_mb(method: str, num: int) -> float:
    out = subprocess.run(
        [sys.executable, PROBE, method, str(num)], capture_output=True, text=True, timeout=300, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["num_samples"] == num and result["tensors"] == 9
    return result["peak_mb"]


@pytest.mark.slow
def test_peak_rss_is_flat_in_samples_and_methods():
    # each sample makes ~4.5 MB of activations: keeping them would add ~250 MB at 64 samples
    small = _peak_mb("minmax", 8)
    large = _peak_mb("minmax", 64)
    assert large <= small * 1.05 + 15, (small, large)
    peaks = {method: _peak_mb(method, 64) for method in ("percentile", "entropy", "mse")}
    for method, peak in peaks.items():
        assert peak <= 1.5 * large, (method, peak, large)
        assert peak <= small + 60, (method, peak, small)  # histograms are O(bins), not O(samples)
    assert peaks["entropy"] <= _peak_mb("entropy", 8) * 1.05 + 15
