"""Per-layer weight bits of a decoder to a perplexity target: int4, int8 or float per MatMul.

    fp32 NLL -> int4 everywhere: within target? done
             -> each layer alone at 8 bits: its gain in next-token log-likelihood
             -> layers ranked by gain per byte added; the shortest prefix at 8 bits that meets the
                target (binary search on measured NLL); if all at 8 miss, the shortest prefix float
             -> (stages/weight_only.py, once the accuracy level is set) the returned model scored
                again and its decode step timed against fp32's

1. The measure is the mean next-token negative log-likelihood (NLL) on the calibration token
   sequences (each feed a prefill from an empty cache), run on onnxruntime's CPU provider; the
   target is ``config.max_ppl_increase``: perplexity at most (1 + t) x fp32's, i.e. NLL at most
   fp32's + log(1 + t).
2. Every candidate is built the way the final model is (``weight_only_pass`` with the same
   rounding, GPTQ where there is data; embeddings int8), from the prepared float graph.
3. The ranking is measured once per layer; the prefix is found by binary search, so a model of
   n layers costs n + log2(n) + 2 builds and scorings. The answer is a measured candidate: the
   NLL reported is the one the returned model scored.
4. Candidates are built and scored in memory, one at a time: models whose float graph is over
   MAX_BYTES (protobuf's 2 GB) are refused with the reason.
5. A decoder whose target no choice meets (its embeddings int8 alone move it too far) gets every
   MatMul float and a note saying by how much it misses.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["choose_bits", "mean_nll", "decode_ms"]

logger = logging.getLogger(__name__)

MAX_FEEDS = 16  # calibration sequences scored per candidate
DECODE_PAST = 64  # cached tokens in the timed decode step
MAX_BYTES = (2 << 30) - (64 << 20)  # (4) a serialized float graph must stay under protobuf's 2 GB


def mean_nll(model: bytes, feeds: list[dict[str, np.ndarray]]) -> float:
    """Mean next-token NLL (nats per token) of the decoder ``model`` over ``feeds`` (prefills)."""
    from edgeq.runtime.generate import log_softmax
    from edgeq.runtime.session import Session

    session = Session(model, providers=("cpu",), threads=None)
    total, count = 0.0, 0
    for feed in feeds:
        ids = feed["input_ids"]
        logp = log_softmax(session.run(feed, checked=True)["logits"].astype(np.float64))
        rows, cols = np.meshgrid(np.arange(ids.shape[0]), np.arange(ids.shape[1] - 1), indexing="ij")
        total -= float(logp[rows, cols, ids[:, 1:]].sum())
        count += ids.shape[0] * (ids.shape[1] - 1)
    if count == 0:
        from edgeq.errors import DataError

        raise DataError("--max-ppl-increase scores next tokens: give calibration sequences of at least 2 tokens")
    return total / count


def decode_ms(models: dict[str, bytes], prefill: dict[str, np.ndarray]) -> dict[str, float]:
    """Median ms of one decode step (1 token after DECODE_PAST cached ones), 1 thread, interleaved."""
    from edgeq.runtime.timing import measure

    key = prefill["past_key"]
    past = np.random.default_rng(0).standard_normal((key.shape[0], 1, key.shape[2], DECODE_PAST, key.shape[4]))
    feed = {"input_ids": prefill["input_ids"][:1, :1], "past_key": past.astype(np.float32),
            "past_value": past.astype(np.float32)}
    return measure(models, feed, threads=1)


@dataclasses.dataclass
class _Scored:
    name: str
    nll: float
    size: int
    eight: frozenset[str]
    fp32: frozenset[str]  # (the candidate's bytes are not kept: one at a time is alive)


def choose_bits(build: Callable[[frozenset[str], frozenset[str]], tuple[bytes, list[dict]]], fp32_model: bytes,
                feeds: list[dict[str, np.ndarray]], max_ppl_increase: float,
                progress: Callable[[str], None] | None = None) -> tuple[frozenset[str], frozenset[str], dict[str, Any]]:
    """(layers at 8 bits, layers float, the report's section); ``build(eight, fp32)`` returns a
    candidate's bytes and its WeightOnlyPass ``quantized`` list."""
    feeds = feeds[:MAX_FEEDS]
    say = progress or (lambda text: None)
    fp32_nll = mean_nll(fp32_model, feeds)
    target = fp32_nll + math.log1p(max_ppl_increase)
    trail: list[_Scored] = []

    def score(name: str, eight: frozenset[str], fp32: frozenset[str]) -> _Scored:
        data, _ = build(eight, fp32)
        s = _Scored(name, mean_nll(data, feeds), len(data), eight, fp32)
        trail.append(s)
        logger.info("decoder bits: %s: ppl %.4f (target %.4f), %d bytes", name, math.exp(s.nll), math.exp(target), s.size)
        return s

    say("int4 everywhere")
    data, quantized = build(frozenset(), frozenset())
    all4 = _Scored("int4 everywhere", mean_nll(data, feeds), len(data), frozenset(), frozenset())
    trail.append(all4)
    four = [q for q in quantized if q["bits"] == 4]
    chosen = all4
    if all4.nll > target and four:
        gains = {}
        for i, q in enumerate(four):  # (3) each layer alone at 8 bits
            say(f"sensitivity {i + 1}/{len(four)}")
            data, _ = build(frozenset({q["node"]}), frozenset())
            gains[q["node"]] = (all4.nll - mean_nll(data, feeds)) / max(q["k"] * q["n"] / 2, 1)  # per byte added
        order = sorted(gains, key=lambda n: -gains[n])
        every8 = score(f"8 bits: all {len(order)} layers", frozenset(order), frozenset())
        if every8.nll <= target:
            chosen = _prefix(order, lambda k: score(f"8 bits: {k} most sensitive", frozenset(order[:k]), frozenset()),
                             every8, target, say)
        else:
            every_float = score(f"float: all {len(order)} layers", frozenset(), frozenset(order))
            chosen = every_float if every_float.nll > target else _prefix(
                order, lambda k: score(f"float: {k} most sensitive, the rest 8 bits", frozenset(order[k:]),
                                       frozenset(order[:k])), every_float, target, say)
    section = {
        "max_ppl_increase": max_ppl_increase,
        "fp32_nll": fp32_nll,
        "nll": chosen.nll,
        "fp32_ppl": round(math.exp(fp32_nll), 5),
        "ppl": round(math.exp(chosen.nll), 5),
        "ppl_ratio": round(math.exp(chosen.nll - fp32_nll), 5),
        "met": chosen.nll <= target,
        "chosen": chosen.name,
        "eight_bit": sorted(chosen.eight),
        "fp32": sorted(chosen.fp32),
        "sequences": len(feeds),
        "tokens_scored": int(sum(f["input_ids"].shape[0] * (f["input_ids"].shape[1] - 1) for f in feeds)),
        "candidates": [{"name": s.name, "ppl": round(math.exp(s.nll), 5), "ppl_ratio": round(math.exp(s.nll - fp32_nll), 5),
                        "bytes": s.size} for s in trail],
    }
    return chosen.eight, chosen.fp32, section


def _prefix(order: list[str], score_k: Callable[[int], _Scored], full: _Scored, target: float,
            say: Callable[[str], None]) -> _Scored:
    """The measured candidate with the shortest prefix of ``order`` that meets ``target``
    (``full``, the whole order, meets it)."""
    lo, hi, best = 0, len(order), full  # prefix lo misses (0: int4 everywhere), hi meets
    while hi - lo > 1:
        mid = (lo + hi) // 2
        say(f"searching {mid} of {len(order)} layers")
        s = score_k(mid)
        if s.nll <= target:
            hi, best = mid, s
        else:
            lo = mid
    return best
