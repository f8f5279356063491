"""Per-operator time of a model on a provider, from onnxruntime's profiler.

    result = profile("model.onnx", providers=("cpu",), runs=20)
    result.by_op_type      # [OpTime("Conv", nodes=12, ms_per_run=1.3, share=0.71), ...]
    result.qdq_share       # share of kernel time in QuantizeLinear/DequantizeLinear
    result.trace_path      # the Chrome trace (chrome://tracing, Perfetto) saved beside the model

The session is profiled from its start; only the kernel events of the timed runs (after
``warmup`` runs) are counted. A node's time is its ``<node>_kernel_time`` events; each event says
which provider ran the node. An ``If``/``Loop``/``Scan`` node's event spans the nodes of the
subgraph it ran, which have events of their own: the control-flow node keeps only its own time
(branch selection, copies), so every microsecond is counted once and the shares add up to 100%.
``NodeTime.inside`` names the control-flow node whose subgraph ran a node.
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
_CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})


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
    inside: str | None = None  # the If/Loop/Scan node whose subgraph ran this node; None: the main graph


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


def _is_executor(e: Mapping[str, Any]) -> bool:
    """A graph's (or one subgraph call's) execution: ``SequentialExecutor::Execute`` and the like."""
    return e.get("cat") == "Session" and e.get("name", "").endswith("Executor::Execute")


def _timed_events(events: Sequence[Mapping[str, Any]], start: float) -> list[dict[str, Any]]:
    """The kernel and executor events from ``start`` on, each with its kind (``flow``: an If/Loop/Scan
    kernel, ``executor``, ``kernel``: any other), node, op type, provider, thread, ts and dur."""
    timed = []
    for e in events:
        name = e.get("name", "")
        kernel = e.get("cat") == "Node" and name.endswith(_KERNEL)
        if not (kernel or _is_executor(e)) or e["ts"] < start:
            continue
        args = e.get("args", {})
        op = args.get("op_name", "?")
        kind = "executor" if not kernel else "flow" if op in _CONTROL_FLOW else "kernel"
        timed.append({"kind": kind, "node": name[: -len(_KERNEL)], "op": op, "provider": args.get("provider", "?"),
                      "thread": str((e.get("pid"), e.get("tid"))), "ts": float(e["ts"]), "dur": float(e.get("dur", 0))})
    return timed


def _own_times(timed: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[str | None]]:
    """Each event's own time and the control-flow node it ran inside (None: the main graph).

    onnxruntime times an If/Loop/Scan kernel from its start to its end, so its event holds the
    subgraph calls it made (an executor event each, holding the subgraph's kernel events, which
    carry their own graph's node names, not the If's). Nesting is found by time: an event that
    starts inside a container event (a control-flow kernel, an executor) of the same thread ran
    inside it, as one thread runs its kernels one after another. A control-flow kernel keeps its
    time less that of the events directly inside it: its subgraph calls, or the subgraph's kernels
    where the trace has no executor events; the gaps between those kernels are the subgraph's
    executor overhead, out of kernel time as they are in the main graph.
    """
    own = [k["dur"] for k in timed]
    inside: list[str | None] = [None] * len(timed)

    def rank(i: int) -> tuple[Any, ...]:  # containers first where events start together
        k = timed[i]
        return k["thread"], k["ts"], -k["dur"], ("flow", "executor", "kernel").index(k["kind"])

    containers: list[int] = []  # the current thread's events that may hold the next one, innermost last
    thread = None
    for i in sorted(range(len(timed)), key=rank):
        k = timed[i]
        if k["thread"] != thread:
            containers, thread = [], k["thread"]
        while containers and k["ts"] >= timed[containers[-1]]["ts"] + timed[containers[-1]]["dur"]:
            containers.pop()
        if containers and timed[containers[-1]]["kind"] == "flow":
            own[containers[-1]] -= k["dur"]
        flow = [c for c in containers if timed[c]["kind"] == "flow"]
        inside[i] = timed[flow[-1]]["node"] if flow else None
        if k["kind"] != "kernel":
            containers.append(i)
    return [max(t, 0.0) for t in own], inside  # durations are whole microseconds: never below 0


def summarize_trace(events: Sequence[Mapping[str, Any]], warmup: int = 0) -> dict[str, Any]:
    """Aggregate a trace's kernel events of the runs after the first ``warmup`` runs, each
    microsecond once: a control-flow node counts its own time, its subgraph's nodes theirs."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    if len(runs) <= warmup:
        raise UsageError(f"the profile holds {len(runs)} run(s), fewer than warm-up + 1: profile more runs")
    timed = runs[warmup:]
    events_from = _timed_events(events, timed[0]["ts"])
    own, inside = _own_times(events_from)
    nodes: dict[tuple[str | None, str], dict[str, Any]] = {}  # a branch may reuse a main-graph node name
    for k, us, parent in zip(events_from, own, inside):
        if k["kind"] == "executor":  # a graph call: its time is its kernels' and the gaps between them
            continue
        entry = nodes.setdefault((parent, k["node"]), {"op": k["op"], "provider": k["provider"], "us": 0.0})
        entry["us"] += us
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
            NodeTime(node, v["op"], v["provider"], v["us"] / n / 1e3, v["us"] / total_us, parent)
            for (parent, node), v in sorted(nodes.items(), key=lambda kv: -kv[1]["us"])
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
