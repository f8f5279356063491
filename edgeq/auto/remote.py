"""Variants built and scored on a cluster's workers: auto's per-layer ranking, sensitivity.

    shared = shared_for(executor, bench, model, table)        # here: what every task needs, put once
    scores = executor.map(score_variant, excludes, shared=shared)   # a Score per exclude tuple

1. ``BenchJob`` carries the prepared float model (serialized), the config, the scoring feeds, the
   fp32 outputs on them (computed here once: no worker runs fp32 again), the user's metric and
   one ranges table. A worker rebuilds the ``Workbench`` once per job (``cluster.worker_cache``)
   and, per task, ``build``s the variant with ``exclude`` and scores it, as the driver would.
2. On the serial executor ``shared`` is the ``Workbench`` itself and nothing is serialized: the
   serial path is the loop it always was.
3. ``build_and_score(shared, recipe)``: any configuration the search builds from the float model
   (its own ranges table, int16/fp16/per-token/dynamic units), for ``ahead.py``: its score, what
   its graph holds, and its bytes where the search records it for timing.
4. Timing stays here: latency is measured on the machine the model is for, in one process
   (``runtime.timing``), never on a worker.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any

from edgeq.auto.workbench import model_bytes_of
from edgeq.cluster import worker_cache
from edgeq.config import QuantConfig

__all__ = ["BenchJob", "RankTrial", "Recipe", "build_and_score", "rank_variant", "score_variant", "shared_for"]


@dataclasses.dataclass(frozen=True)
class BenchJob:
    key: str
    model: bytes  # the prepared float model (the variants' base), serialized
    config: QuantConfig
    feeds: list[dict]
    ref_samples: dict[str, list]
    metric: Any
    table: Any  # the RangesTable every variant of this job is built with

    @classmethod
    def of(cls, bench: Any, model: Any, table: Any) -> BenchJob:
        import onnx_ir as ir

        from edgeq.errors import ClusterError

        proto = ir.to_proto(model)
        if proto.ByteSize() >= 2**31:
            raise ClusterError("a model of 2 GB or more is not sent to a cluster's workers: run without --cluster")
        return cls(uuid.uuid4().hex, proto.SerializeToString(), bench.config, bench.feeds, bench.ref_samples,
                   bench.metric, table)


def _bench_of(job: BenchJob) -> Any:
    import onnx
    import onnx_ir as ir

    from edgeq.auto.workbench import Workbench
    from edgeq.graph import freeze_constants

    proto = onnx.ModelProto()
    proto.ParseFromString(job.model)
    model = ir.from_proto(proto)
    freeze_constants(model)
    return Workbench.from_refs(model, job.config, job.feeds, job.ref_samples, job.metric, width=1)  # one CPU a worker


def score_variant(shared: Any, exclude: Sequence[str]) -> Any:
    """The ``Score`` of the variant with ``exclude`` in float. ``shared``: a ``BenchJob`` (on a
    worker) or, here, ``(Workbench, model, table)``."""
    if isinstance(shared, BenchJob):
        bench = worker_cache(shared.key, lambda: _bench_of(shared))
        model, table = bench.model, shared.table
    else:
        bench, model, table = shared
    return bench.score(bench.build(table, tuple(exclude), model=model).model)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One configuration for a worker to build (``Workbench.build_mixed``'s arguments)."""

    table: Any
    exclude: tuple[str, ...]
    int16: tuple[str, ...] = ()
    fp16: tuple[str, ...] = ()
    per_token: tuple[str, ...] = ()
    dynamic: tuple[str, ...] = ()
    means: dict[str, Any] | None = None  # bias correction on the int8 nodes: the channel means (repairs.py)
    want_bytes: bool = False  # the serialized model too (a configuration recorded for timing)


def build_and_score(job: BenchJob, recipe: Recipe) -> tuple[Any, bytes | None, dict[str, Any]]:
    """(its ``Score``, its bytes where asked, {"int8": has_int8, "changes": precision_changes}):
    built as ``Search.build`` builds it (``state.py``)."""
    from edgeq.auto.latency import has_int8, precision_changes

    bench = worker_cache(job.key, lambda: _bench_of(job))
    model = bench.model
    if recipe.means is not None:
        model = bench.bias_corrected(model, recipe.means, recipe.exclude + recipe.fp16)
    result = bench.build_mixed(recipe.table, recipe.exclude, model, int16=recipe.int16, fp16=recipe.fp16,
                               per_token=recipe.per_token, dynamic=recipe.dynamic)
    data = model_bytes_of(result.model)
    facts = {"int8": has_int8(result.model), "changes": precision_changes(result.model)}
    if not recipe.want_bytes:
        return bench.score(data), None, facts
    import onnx_ir as ir

    return bench.score(data), ir.to_proto(result.model).SerializeToString(), facts


@dataclasses.dataclass(frozen=True)
class RankTrial:
    """One unit's ranking variant (``Workbench.ranking_trial``), worked out where it is built."""

    table: Any
    name: str
    units: tuple[str, ...]
    exclude: tuple[str, ...]  # the configuration's own float units
    dynamic: bool  # a dynamic MatMul/Gemm: int8 alone whatever its neighbours
    means: dict[str, Any] | None = None  # bias correction (as ``Recipe.means``)


def rank_variant(job: BenchJob, trial: RankTrial) -> tuple[bool, Any]:
    """(whether the unit was int8 alone, the ``Score`` of its variant): ``Workbench.ranking_trial``,
    then the variant built and scored as ``build_and_score`` does."""
    bench = worker_cache(job.key, lambda: _bench_of(job))
    alone, exclude = bench.ranking_trial(trial.exclude, list(trial.units), trial.name, trial.dynamic)
    return alone, build_and_score(job, Recipe(trial.table, exclude, means=trial.means))[0]


def shared_for(executor: Any, bench: Any, model: Any, table: Any) -> Any:
    """What ``score_variant`` takes on ``executor``: the objects themselves on the serial one."""
    if not executor.distributed:
        return (bench, model, table)
    return executor.share(BenchJob.of(bench, model, table))
