"""Fidelity and latency of a quantized model against its fp32 original (onnxruntime CPU)."""

from __future__ import annotations

import itertools
import logging
import os
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from edgeq.metrics import fidelity
from edgeq.runtime.memory import InMemoryModel, inference_session

__all__ = ["evaluate", "layer_errors", "cpu_session", "median_latency_ms"]

logger = logging.getLogger(__name__)


def cpu_session(model: bytes | str | InMemoryModel, threads: int, *, prepack: bool = True) -> Any:
    """A CPU session. ``prepack=False``: onnxruntime keeps no packed copy of the weights (a
    session whose weights are handed over by reference then adds little memory): for a fidelity
    pass, not for timing."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 4  # errors reach the user once, as edgeq's one line
    if not prepack:
        so.add_session_config_entry("session.disable_prepacking", "1")
    return inference_session(model, so, ["CPUExecutionProvider"])


def median_latency_ms(sessions: Sequence[Any], feed: Mapping[str, np.ndarray], *, runs: int = 20,
                      budget_s: float = 2.0) -> list[float]:
    """Median wall time per run of each session, runs interleaved so drift hits all alike."""
    for sess in sessions:
        for _ in range(3):
            sess.run(None, dict(feed))
    times: list[list[float]] = [[] for _ in sessions]
    start = time.perf_counter()
    for i in range(runs):
        for sess, bucket in zip(sessions, times):
            t0 = time.perf_counter()
            sess.run(None, dict(feed))
            bucket.append((time.perf_counter() - t0) * 1000.0)
        if i >= 4 and time.perf_counter() - start > budget_s:
            break
    return [statistics.median(t) for t in times]


def evaluate(
    fp32: bytes | str | InMemoryModel,
    int8: bytes | str | InMemoryModel,
    feeds: Iterable[Mapping[str, np.ndarray]],
    *,
    labels: Sequence[int] | np.ndarray | None = None,
    latency: bool = True,
    threads: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Per-output fidelity over all feeds, top-1 accuracy vs ``labels``, median latency.

    Memory: the fidelity pass runs both models without prepacked weights, and its sessions are
    gone before the latency pass makes its own (prepacked, as deployed) pair, one thread count at
    a time (a 0.75 GiB model: the fidelity pass 3.0 -> 2.1 GiB; the latency pass still peaks at
    4.7x the model while onnxruntime builds a session: it copies the weights it was handed)."""
    ref_sess, q_sess = cpu_session(fp32, 0, prepack=False), cpu_session(int8, 0, prepack=False)
    names = [o.name for o in ref_sess.get_outputs()]
    refs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    cands: dict[str, list[np.ndarray]] = {n: [] for n in names}
    first_feed = None
    count = 0
    for feed in feeds:
        feed = dict(feed)
        first_feed = first_feed or feed
        for n, r, c in zip(names, ref_sess.run(None, feed), q_sess.run(None, feed)):
            refs[n].append(np.asarray(r))
            cands[n].append(np.asarray(c))
        count += 1
    del ref_sess, q_sess
    if count == 0:
        from edgeq.errors import DataError

        raise DataError("evaluation data yielded no feeds: give at least one sample")
    out: dict[str, Any] = {"num_samples": count, "outputs": {}}
    for n in names:
        # outputs whose size depends on the values (detections after NMS) may differ in shape:
        # compare the samples where they agree and say how many did not
        pairs = [(r, c) for r, c in zip(refs[n], cands[n]) if r.shape == c.shape]
        mismatched = len(refs[n]) - len(pairs)
        if not pairs:
            out["outputs"][n] = {"shape_mismatch": mismatched}
            continue
        if len({r.shape[-1:] for r, _ in pairs}) == 1:  # rows of one width (logits, features)
            ref = np.concatenate([r.reshape(-1, *r.shape[-1:]) if r.ndim else r.reshape(1, 1) for r, _ in pairs])
            cand = np.concatenate([c.reshape(-1, *c.shape[-1:]) if c.ndim else c.reshape(1, 1) for _, c in pairs])
        else:  # a length that varies from sample to sample: one flat vector
            ref, cand = (np.concatenate([a.reshape(-1) for a in side]) for side in zip(*pairs))
        if ref.dtype.kind != "f":
            out["outputs"][n] = {"exact_match": float(np.mean(ref == cand))}
        else:
            out["outputs"][n] = fidelity(ref, cand, top1=all(r.ndim == 2 for r in refs[n]))  # (batch, classes) only
        if mismatched:
            out["outputs"][n]["shape_mismatch"] = mismatched
    if labels is not None:
        first = names[0]
        ref_logits = np.concatenate([r.reshape(-1, r.shape[-1]) for r in refs[first]])
        q_logits = np.concatenate([c.reshape(-1, c.shape[-1]) for c in cands[first]])
        labels = np.asarray(labels).reshape(-1)[: len(ref_logits)]
        if len(labels) == len(ref_logits):
            out["accuracy"] = {
                "fp32": float(np.mean(np.argmax(ref_logits, -1) == labels)),
                "int8": float(np.mean(np.argmax(q_logits, -1) == labels)),
                "output": first,
            }
        else:
            logger.warning("got %d labels for %d evaluation rows: accuracy skipped", len(labels), len(ref_logits))
    if latency and first_feed is not None:
        threads = list(threads or (1, os.cpu_count() or 1))
        out["latency_ms"] = {}
        for t in dict.fromkeys(threads):
            fp32_ms, int8_ms = median_latency_ms([cpu_session(fp32, t), cpu_session(int8, t)], first_feed)
            out["latency_ms"][str(t)] = {"fp32": fp32_ms, "int8": int8_ms}
    return out


def layer_errors(fp32: bytes | InMemoryModel, int8: bytes | InMemoryModel, names: Sequence[str], feeds: Iterable[Mapping[str, np.ndarray]],
                 *, max_feeds: int = 8) -> dict[str, dict[str, float]]:
    """SQNR and cosine of each named activation in the int8 model vs the fp32 model.

    The int8 model runs unoptimized (its QDQ simulated in float, which is what the fused kernels
    compute up to rounding), so the float value before each QuantizeLinear still exists and
    carries all the error accumulated up to that layer.
    """
    import onnx
    import onnxruntime as ort

    from edgeq.metrics import cosine, sqnr_db

    def exposed(data: bytes | InMemoryModel) -> tuple[InMemoryModel, list[str]]:
        memory = data if isinstance(data, InMemoryModel) else InMemoryModel(data, {})
        model = memory.proto()
        present = {o for node in model.graph.node for o in node.output}
        outputs = {o.name for o in model.graph.output}
        wanted = [n for n in names if n in present]
        for name in wanted:
            if name not in outputs:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
        return memory.with_graph(model), wanted

    def run(memory: InMemoryModel, disable: bool) -> dict[str, list[np.ndarray]]:
        """One model at a time (its session gone before the next one's is built): the int8 model
        unoptimized holds every weight dequantized, beside the fp32 session it doubled the peak."""
        so = ort.SessionOptions()
        so.log_severity_level = 4  # errors reach the user once, as edgeq's one line
        so.add_session_config_entry("session.disable_prepacking", "1")
        if disable:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = inference_session(memory, so, ["CPUExecutionProvider"])
        got: dict[str, list[np.ndarray]] = {n: [] for n in common}
        for feed in kept:
            for n, value in zip(common, sess.run(common, dict(feed))):
                got[n].append(np.asarray(value).reshape(-1))
        return got

    (ref_model, ref_names), (q_model, q_names) = exposed(fp32), exposed(int8)
    common = [n for n in ref_names if n in set(q_names)]
    if not common:
        return {}
    kept = list(itertools.islice(feeds, max_feeds))
    refs = run(ref_model, False)
    cands = run(q_model, True)
    out = {}
    for n in common:
        if refs[n]:
            r, c = np.concatenate(refs[n]), np.concatenate(cands[n])
            out[n] = {"sqnr_db": sqnr_db(r, c), "cosine": cosine(r, c)}
    return out
