"""GPTQ rounding: on edgeq's own int8 grid, better than rounding to nearest on new inputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.passes.gptq import gptq_round, on_grid
from edgeq.passes.weights import quantize_weight

K, N = 128, 32


def _inputs(rng, mix, n):
    """Correlated activations, as real layers see: a few factors plus a little noise."""
    return rng.normal(size=(n, mix.shape[0])) @ mix + 0.3 * rng.normal(size=(n, mix.shape[1]))


def _sqnr(ref, got):
    return 10 * np.log10(np.sum(ref**2) / np.sum((ref - got) ** 2))


def test_levels_are_what_quantization_finds_again():
    rng = np.random.default_rng(0)
    w = (0.05 * rng.normal(size=(K, N))).astype(np.float32)
    x = _inputs(rng, rng.normal(size=(12, K)), 2000)
    grid = on_grid(w, x.T @ x)
    again = quantize_weight(grid, 1)
    rtn = quantize_weight(w, 1)
    np.testing.assert_allclose(again.scale, rtn.scale, rtol=1e-6)  # each column's scale kept
    np.testing.assert_array_equal(again.dequantize(), np.asarray(again.values, np.float32) * again.scale)
    assert np.array_equal(np.rint(grid / again.scale).astype(np.int8), again.values)
    assert np.all(np.abs(again.values).max(axis=0) == 127)
    assert np.abs(again.values.astype(int) - rtn.values.astype(int)).max() >= 1  # it did round differently


def test_beats_nearest_rounding_on_new_inputs():
    rng = np.random.default_rng(1)
    mix = rng.normal(size=(12, K))
    w = (0.05 * rng.normal(size=(K, N))).astype(np.float32)
    x, new = _inputs(rng, mix, 2000), _inputs(rng, mix, 2000)
    ref = new @ w
    nearest = _sqnr(ref, new @ quantize_weight(w, 1).dequantize())
    gptq = _sqnr(ref, new @ on_grid(w, x.T @ x))
    assert gptq >= nearest + 3.0, (gptq, nearest)


@pytest.mark.parametrize("case", ["zero column", "dead input"])
def test_degenerate_weights_and_inputs(case):
    rng = np.random.default_rng(2)
    w = (0.05 * rng.normal(size=(K, N))).astype(np.float32)
    x = _inputs(rng, rng.normal(size=(12, K)), 500)
    if case == "zero column":
        w[:, 3] = 0.0
    else:
        x[:, 5] = 0.0  # an input channel that is always zero: H singular there
    levels = gptq_round(w, np.maximum(np.abs(w).max(axis=0), 1e-12) / 127, x.T @ x)
    assert levels.dtype == np.int8 and np.all(np.abs(levels.astype(int)) <= 127)
    if case == "zero column":
        assert not levels[:, 3].any()


@pytest.mark.parametrize("k", [1, 7, 200, 700])
def test_inverse_cholesky_is_the_upper_factor_of_the_inverse(k):
    """``_inverse_cholesky`` (a factorisation of the reversed matrix and a triangular inverse)
    against its definition: the upper Cholesky factor of the damped ``H``'s inverse."""
    from edgeq.passes import gptq

    rng = np.random.default_rng(k)
    x = rng.normal(size=(max(2 * k, 8), k)) @ rng.normal(size=(k, k))
    h = x.T @ x
    if k > 1:
        h[3 % k, :] = h[:, 3 % k] = 0.0  # an input channel that is always zero
    u = gptq._inverse_cholesky(h)
    damped = h.copy()
    dead = np.diag(damped) <= 0
    damped[dead, dead] = 1.0
    damped += gptq.DAMPING * np.mean(np.diag(damped)) * np.eye(k)
    want = np.linalg.cholesky(np.linalg.inv(damped)).T
    assert np.allclose(np.triu(u), u) and np.all(np.diag(u) > 0)
    np.testing.assert_allclose(u, want, rtol=1e-8, atol=1e-12 * np.abs(want).max())
