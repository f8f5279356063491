"""What each quantizable unit costs in fp32: one profile of the float model where auto times.

    ms = unit_times(float_model, feed, provider="cpu", threads=1)   # {node name: ms per run}

The search ranks units by the noise each adds in int8 (``search._fallback``). Which float units
go back to int8 first, when the target leaves room for some, is a knapsack: the most time saved
per unit of noise added. A unit's fp32 time is what its int8 form can save (int8 kernels run at
a similar fraction of it), so one profile of the float model on the provider that auto times
gives the weights: ddddocr's recognizer (AMD EPYC, 1 thread) spends 28% of its fp32 time in the last Gemm and 24% in
its LSTM, against 0.3% for each of its smallest convolutions, which rank beside them by noise.

onnxruntime renames the nodes it rewrites: a convolution in the NCHWc layout is named after its
output value (``<value>_nchwc``), a fusion after its first node (``<node>/QuickGeluFusion/``).
Both are mapped back to the graph's node; layout reorders and nodes with no graph counterpart
are left out (their time is no unit's). Where profiling fails (a provider without it), the map
is empty and the order falls back to the noise alone.

The times are measured, so, like auto's timing of whole configurations, two layers of nearly
equal time per noise may come in either order from one run to the next; a deterministic cost
model replaces both in the tests that check byte-identical answers (tests/test_concurrency.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["unit_times", "RUNS"]

logger = logging.getLogger(__name__)

RUNS = 5  # profiled runs after WARMUP (times are weights for an order, not a benchmark)
WARMUP = 2


def _graph_node(name: str, nodes: Mapping[str, Any], producers: Mapping[str, str]) -> str | None:
    if name in nodes:
        return name
    if "/" in name and name.split("/", 1)[0] in nodes:  # a fusion: named after its first node
        return name.split("/", 1)[0]
    if name.endswith("_nchwc"):  # NCHWc layout: named after the output value
        return producers.get(name[: -len("_nchwc")])
    return None


def unit_times(model: Any, feed: Mapping[str, np.ndarray], provider: str = "cpu", threads: int = 1) -> dict[str, float]:
    """{graph node name: fp32 milliseconds per run} of ``model`` (an onnx_ir model) on ``feed``."""
    from edgeq.auto.workbench import model_bytes_of
    from edgeq.graph import all_nodes
    from edgeq.runtime.profile import summarize_trace
    from edgeq.runtime.session import Session

    nodes = {n.name: n for n in all_nodes(model.graph) if n.name}
    producers = {v.name: n.name for n in all_nodes(model.graph) for v in n.outputs if v.name and n.name}
    folder = tempfile.mkdtemp(prefix=".edgeq-unit-time-")
    try:
        session = Session(model_bytes_of(model), providers=provider, threads=threads,
                          profile_prefix=os.path.join(folder, "trace"))
        for _ in range(WARMUP + RUNS):
            session.run(dict(feed))
        with open(session.end_profiling()) as f:
            summary = summarize_trace(json.load(f), WARMUP)
    except Exception as e:  # an order, not an answer: the noise alone orders the units then
        logger.info("auto: the float model could not be profiled (%s): units ordered by noise alone", e)
        return {}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out: dict[str, float] = {}
    for timed in summary["by_node"]:
        name = _graph_node(timed.node, nodes, producers)
        if name is not None:
            out[name] = out.get(name, 0.0) + timed.ms_per_run
    logger.info("auto: fp32 profile: %d of %d nodes timed, %.1f%% of kernel time mapped", len(out), len(nodes),
                100 * sum(t.share for t in summary["by_node"] if _graph_node(t.node, nodes, producers)))
    return out
