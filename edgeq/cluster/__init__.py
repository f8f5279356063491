"""Work spread over a Ray cluster, or run here in order: one executor for every search.

    from edgeq import cluster

    with cluster.using(cluster.connect("local", workers=4)):   # or "ray://host:10001", "auto"
        table = collect_ranges(...)          # calibration shards run as Ray tasks, merged in order
    results = cluster.current().map(fn, items, shared=big)     # fn(shared, item) -> result

``current()`` is the serial executor unless a caller opened ``using(...)``: every path that can
spread work (calibration shards, auto's variant scoring, sensitivity, device benchmarks) asks it
and, on the serial one, runs exactly as before. Ray is an optional extra (``edgeq[cluster]``):
nothing here imports it until ``connect`` is called. See docs/cluster.md.
"""

from __future__ import annotations

from edgeq.cluster.executor import Executor, Shared, current, using, worker_cache
from edgeq.cluster.ray_executor import RayExecutor, connect

__all__ = ["Executor", "Shared", "RayExecutor", "connect", "current", "using", "worker_cache"]
