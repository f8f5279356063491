"""Histogram methods through real onnxruntime sessions: percentile, entropy, mse, merging."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.calibrate import collect_ranges
from edgeq.calibrate.observers import HistogramObserver
from edgeq.config import QuantConfig

from .graphs import identity_model


def _ranges(batches, method, **config):
    model = identity_model("N")
    feeds = [{"x": b.astype(np.float32)} for b in batches]
    return collect_ranges(model, ["t"], feeds, QuantConfig(method=method, **config), progress=False)["t"]


def _fake_quant(x, lo, hi, levels=256):
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / (levels - 1)
    zero = np.round(-lo / scale)
    q = np.clip(np.round(x / scale) + zero, 0, levels - 1)
    return (q - zero) * scale


def _fake_quant_sym(x, amax):
    scale = amax / 127.0
    return np.clip(np.round(x / scale), -127, 127) * scale


def _width(batches, num_bins=2048):
    obs = HistogramObserver("t", num_bins)
    for b in batches:
        obs.update(b.astype(np.float32))
    return obs.width


def test_percentile_matches_numpy_within_a_bin(rng):
    batches = [rng.standard_normal(5000) * s + 0.5 for s in (1.0, 2.0, 0.5, 3.0)]
    data = np.concatenate(batches).astype(np.float32)
    width = _width(batches)
    r = _ranges(batches, "percentile", percentile=99.0)
    lo, hi = np.percentile(data, [0.5, 99.5])
    assert r.lo == pytest.approx(lo, abs=width) and r.hi == pytest.approx(hi, abs=width)
    assert r.summary["bins"] == 2048 and r.summary["percentile"] == 99.0
    r = _ranges(batches, "percentile", percentile=99.0, symmetric=True)
    t = np.percentile(np.abs(data), 99.0)
    assert r.hi == pytest.approx(t, abs=width) and r.lo == pytest.approx(-t, abs=width)
    relu = [np.maximum(b, 0) for b in batches]  # one-sided: only the top tail is cut
    r = _ranges(relu, "percentile", percentile=99.0)
    assert r.lo == 0.0 and r.hi == pytest.approx(np.percentile(np.maximum(data, 0), 99.0), abs=width)


def test_entropy_clips_outliers_and_lowers_bulk_error(rng):
    bulk = rng.standard_normal(200_000)
    outliers = np.array([40.0, -35.0, 38.0, 50.0])
    batches = [bulk[:100_000], np.concatenate([bulk[100_000:], outliers])]
    entropy = _ranges(batches, "entropy", activations="int8", symmetric=True)
    minmax = _ranges(batches, "minmax", activations="int8", symmetric=True)
    assert minmax.hi == pytest.approx(50.0)
    assert entropy.max == pytest.approx(50.0) and entropy.hi < 0.2 * entropy.max  # outliers clipped
    assert 2.0 < entropy.hi  # but not the bulk
    assert entropy.summary["levels"] == 128 and entropy.summary["threshold"] == pytest.approx(entropy.hi, rel=1e-6)
    err_entropy = np.mean((_fake_quant_sym(bulk, entropy.hi) - bulk) ** 2)
    err_minmax = np.mean((_fake_quant_sym(bulk, minmax.hi) - bulk) ** 2)
    assert err_entropy < 0.1 * err_minmax


def test_entropy_one_sided_for_relu_outputs(rng):
    data = np.maximum(rng.standard_normal(100_000), 0)
    data[:3] = [30.0, 25.0, 28.0]
    r = _ranges([data], "entropy", activations="uint8")
    assert r.lo == 0.0 and r.summary["levels"] == 256 and 1.5 < r.hi < 10.0


@pytest.mark.parametrize("activations, symmetric", [("uint8", False), ("int8", True)])
def test_mse_beats_minmax_on_heavy_tails(rng, activations, symmetric):
    data = rng.standard_t(df=3, size=100_000)
    batches = [data[:50_000], data[50_000:]]
    mse = _ranges(batches, "mse", activations=activations, symmetric=symmetric)
    if symmetric:
        err = lambda lo, hi: np.mean((_fake_quant_sym(data, max(-lo, hi)) - data) ** 2)  # noqa: E731
    else:
        err = lambda lo, hi: np.mean((_fake_quant(data, lo, hi) - data) ** 2)  # noqa: E731
    assert mse.hi < data.max() and mse.lo > data.min()
    minmax_err = err(data.min(), data.max())
    assert err(mse.lo, mse.hi) < 0.85 * minmax_err
    # and it is as good as a brute-force search of the real quantization error (to 2 %)
    best = min(err(data.min() * f, data.max() * f) for f in np.linspace(0.05, 1.0, 96))
    assert err(mse.lo, mse.hi) <= 1.02 * best


def test_merge_of_growing_batches_is_exact(rng):
    """Widening merges 2**k bins into one: the counts equal np.histogram over the final range."""
    batches = [rng.standard_normal(20_000).astype(np.float32) * s for s in (0.01, 0.3, 1.0, 7.0, 100.0)]
    obs = HistogramObserver("t", 512)
    obs.update(np.zeros(10, np.float32))  # zeros before any range is known are kept too
    for b in batches:
        obs.update(b)
    data = np.concatenate([np.zeros(10, np.float32), *batches])
    assert obs.radius >= np.abs(data).max() and obs.min == data.min() and obs.max == data.max()
    expected, _ = np.histogram(data, bins=1024, range=(-obs.radius, obs.radius))
    counts, width = obs.signed_histogram()
    assert counts.sum() == data.size
    assert np.abs(counts - expected).sum() <= 4  # float rounding at bin edges only


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
def test_growing_batches_give_the_one_batch_answer(rng, method):
    """The grid depends only on the final max|x|: split and whole data give the same range."""
    batches = [rng.laplace(size=30_000) * s for s in (0.2, 1.0, 3.0)]
    split = _ranges(batches, method, percentile=99.9)
    whole = _ranges([np.concatenate(batches)], method, percentile=99.9)
    reverse = _ranges(batches[::-1], method, percentile=99.9)
    width = _width(batches)
    for other in (whole, reverse):
        assert split.lo == pytest.approx(other.lo, abs=width) and split.hi == pytest.approx(other.hi, abs=width)
    assert split.hi < split.max


def test_non_finite_activations_are_ignored():
    obs = HistogramObserver("t", 128)
    obs.update(np.array([1.0, np.inf, -2.0, np.nan], np.float32))
    assert (obs.min, obs.max) == (-2.0, 1.0) and obs.signed_histogram()[0].sum() == 2


def test_progress_bar_without_a_tty(rng, capsys):
    r = collect_ranges(identity_model("N"), ["t"], [{"x": rng.standard_normal(10).astype(np.float32)}] * 3,
                       QuantConfig(method="entropy"), progress=True)
    assert r["t"].summary["num_samples"] == 3
