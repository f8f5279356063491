"""Per-operator time of a model on a provider, from onnxruntime's profiler.

    result = profile("model.onnx", providers=("cpu",), runs=20)
    result.by_op_type      # [OpTime("Conv", nodes=12, ms_per_run=1.3, share=0.71), ...]
    result.qdq_share       # share of kernel time in QuantizeLinear/DequantizeLinear
    result.trace_path      # the Chrome trace (chrome://tracing, Perfetto) saved beside the model

The session is profiled from its start; only the kernel events of the timed runs (after
``warmup`` runs) are counted. A node's time is its ``<node>_kernel_time`` events; each event says
which provider ran the node.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from edgeq.errors import UsageError

__all__ = ["OpTime", "NodeTime", "ProfileResult", "profile", "summarize_trace"]

_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
_KERNEL = "_kernel_time"


@dataclasses.dataclass(frozen=True)
class OpTime:
    op_type: str
    nodes: int
    ms_per_run: float
    share: float


@dataclasses.dataclass(frozen=True)
class NodeTime:
    node: str
    op_type: str
    provider: str
    ms_per_run: float
    share: float


@dataclasses.dataclass(frozen=True)
class ProfileResult:
    model: str
    providers: tuple[str, ...]
    runs: int
    run_ms: float  # mean wall time of one timed run (onnxruntime's model_run events)
    kernel_ms: float  # sum of kernel times per run
    by_op_type: tuple[OpTime, ...]
    by_node: tuple[NodeTime, ...]
    qdq_share: float
    nodes_by_provider: dict[str, int]
    trace_path: str | None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["providers"] = list(self.providers)
        return d


def summarize_trace(events: Sequence[Mapping[str, Any]], warmup: int = 0) -> dict[str, Any]:
    """Aggregate a trace's kernel events of the runs after the first ``warmup`` runs."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    if len(runs) <= warmup:
        raise UsageError(f"the profile holds {len(runs)} run(s), fewer than warm-up + 1: profile more runs")
    timed = runs[warmup:]
    start = timed[0]["ts"]
    nodes: dict[str, dict[str, Any]] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith(_KERNEL) or e["ts"] < start:
            continue
        args = e.get("args", {})
        node = name[: -len(_KERNEL)]
        entry = nodes.setdefault(node, {"op": args.get("op_name", "?"), "provider": args.get("provider", "?"), "us": 0.0})
        entry["us"] += float(e.get("dur", 0))
    n = len(timed)
    total_us = sum(v["us"] for v in nodes.values()) or 1.0
    by_op: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for v in nodes.values():
        by_op[v["op"]][0] += 1
        by_op[v["op"]][1] += v["us"]
    return {
        "runs": n,
        "run_ms": sum(float(r.get("dur", 0)) for r in timed) / n / 1e3,
        "kernel_ms": total_us / n / 1e3 if nodes else 0.0,
        "by_op_type": tuple(
            OpTime(op, int(count), us / n / 1e3, us / total_us)
            for op, (count, us) in sorted(by_op.items(), key=lambda kv: -kv[1][1])
        ),
        "by_node": tuple(
            NodeTime(node, v["op"], v["provider"], v["us"] / n / 1e3, v["us"] / total_us)
            for node, v in sorted(nodes.items(), key=lambda kv: -kv[1]["us"])
        ),
        "qdq_share": sum(v["us"] for v in nodes.values() if v["op"] in _QDQ_OPS) / total_us,
        "nodes_by_provider": dict(collections.Counter(v["provider"] for v in nodes.values())),
    }


def _default_trace_path(model: str) -> str:
    stem = os.path.splitext(model)[0]
    return stem + ".profile.json"


def profile(
    model: str | os.PathLike,
    providers: Sequence[Any] | str = ("cpu",),
    threads: int | None = None,
    *,
    runs: int = 20,
    warmup: int = 3,
    batch: int | None = None,
    inputs: str | None = None,
    dims: Mapping[str, int] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    trace_out: str | os.PathLike | None = None,
    keep_trace: bool = True,
) -> ProfileResult:
    """Profile ``runs`` runs (after ``warmup``) of a model file; save the Chrome trace beside it
    (``<model>.profile.json``) or at ``trace_out``, atomically, never over the model."""
    from edgeq.io import check_output_path
    from edgeq.runtime.bench import make_feed
    from edgeq.runtime.session import Session, check_model_file

    model = os.fspath(model)
    check_model_file(model)
    if runs < 1 or warmup < 0:
        raise UsageError("--runs must be >= 1 and --warmup >= 0")
    target = os.fspath(trace_out) if trace_out is not None else _default_trace_path(model)
    if keep_trace:
        check_output_path(target, [model])
    folder = os.path.dirname(os.path.abspath(target)) if keep_trace else None
    if folder:
        os.makedirs(folder, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".edgeq-profile-", dir=folder)
    try:
        session = Session(model, providers=providers, threads=threads, profile_prefix=os.path.join(tmp_dir, "trace"))
        feed = make_feed(session, batch, inputs=inputs, dims=dims, shapes=shapes)
        for _ in range(warmup + runs):
            session.run(feed, checked=True)
        raw = session.end_profiling()
        with open(raw) as f:
            events = json.load(f)
        summary = summarize_trace(events, warmup)
        saved = None
        if keep_trace:
            os.replace(raw, target)
            saved = target
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return ProfileResult(model=model, providers=tuple(session.providers), trace_path=saved, **summary)
