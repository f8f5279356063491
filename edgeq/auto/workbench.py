"""Build quantized variants of one float model and score them against its fp32 outputs.

    bench = Workbench.create(model, config, calib_source, eval_data)   # prepares once, runs fp32 once
    units = bench.units()                       # the quantizable nodes (as the selector groups them)
    result = bench.build(table, exclude=("conv3",))   # build_variant with reused ranges
    score = bench.score(result.model)           # SQNR of every output, min, user metric

Variants differ only in ``QuantConfig.exclude`` and in the ranges table they are given, so no
variant calibrates again. Scores come from a few evaluation feeds run on onnxruntime (CPU).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from edgeq.calibrate.observe import ANALYSIS_THREADS, concurrency, run_in_order
from edgeq.config import QuantConfig
from edgeq.errors import UsageError
from edgeq.runtime.memory import InMemoryModel

__all__ = ["Workbench", "Unit", "Score", "resolve_metric", "prepare_float", "model_bytes_of", "reusable_source"]

logger = logging.getLogger(__name__)

Metric = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], float]


@dataclasses.dataclass(frozen=True)
class Unit:
    """One quantizable node (a compute node, with the Relu/Clip folded into it)."""

    name: str
    op: str
    folded: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return "+".join([self.op, *(f.split(":")[-1] for f in self.folded)])


@dataclasses.dataclass(frozen=True)
class Score:
    """Fidelity of one variant: SQNR (dB) per float output, their minimum, the user metric."""

    sqnr: dict[str, float]
    metric: float | None = None
    low: dict[str, float] | None = None  # per output: a bootstrap lower bound of the SQNR over samples
    worst: dict[str, float] | None = None  # per output: the worst sample's SQNR
    p5: dict[str, float] | None = None  # per output: the 5th percentile of the per-sample SQNRs
    samples: int | None = None
    carried: dict[str, int] | None = None  # per output: the fewest samples holding half its noise

    @property
    def min_sqnr(self) -> float:
        return min(self.sqnr.values()) if self.sqnr else math.inf

    @property
    def min_low(self) -> float:
        """The SQNR the target is judged on: the lower bound where there is one."""
        values = (self.low or self.sqnr).values()
        return min(values) if values else math.inf

    def meets(self, min_sqnr: float | None, min_score: float | None) -> bool:
        ok = min_sqnr is None or self.min_low >= min_sqnr
        return ok and (min_score is None or (self.metric is not None and self.metric >= min_score))

    @classmethod
    def of(cls, fidelity: Mapping[str, Any], metric: float | None, samples: int) -> Score:
        """From a ``SampleFidelity`` per float output (``edgeq.auto.samples``)."""
        return cls({n: f.point for n, f in fidelity.items()}, metric, low={n: f.low for n, f in fidelity.items()},
                   worst={n: f.worst for n, f in fidelity.items()}, p5={n: f.p5 for n, f in fidelity.items()},
                   samples=samples, carried={n: f.carried for n, f in fidelity.items()})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"min_sqnr_db": _round(self.min_sqnr), "sqnr_db": {k: _round(v) for k, v in self.sqnr.items()}}
        for key, per in (("bound_db", self.low), ("worst_sample_db", self.worst), ("p5_sample_db", self.p5)):
            if per:
                out[key] = _round(min(per.values()))
        if self.samples is not None:
            out["samples"] = self.samples
        if self.metric is not None:
            out["metric"] = self.metric
        return out


def _round(value: float) -> float:
    return round(value, 3) if math.isfinite(value) else value


def resolve_metric(metric: Any) -> Metric | None:
    """A callable, or ``"module:function"`` taking (reference_outputs, outputs) -> score."""
    if metric is None or callable(metric):
        return metric
    module, _, attr = str(metric).partition(":")
    if not module or not attr:
        raise UsageError(f"metric {metric!r} must be 'module:function' (e.g. mypkg.metrics:accuracy)")
    try:
        function = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"metric {metric!r} cannot be imported ({e}): check the module path") from None
    if not callable(function):
        raise UsageError(f"metric {metric!r} is not a function")
    return function


def model_bytes_of(model: Any) -> Any:
    """``model`` as onnxruntime takes it from memory (``edgeq.runtime.memory.InMemoryModel``):
    the graph serialized, the weights by reference (no copy; external data from any folder)."""
    from edgeq.runtime.memory import in_memory

    return in_memory(model)


def reusable_source(data: Any, model: Any) -> Any:
    """``load_data(data, model)``, read into memory first when it can be iterated only once
    (a generator): auto and sensitivity go over the calibration data more than once."""
    from edgeq.calibrate import load_data

    source = load_data(data, model)
    if getattr(source, "_one_shot", False):
        logger.info("calibration data is a one-shot iterator: holding it in memory to re-read it")
        source = load_data([dict(feed) for _, feed in source.items()], model)
    return source


def prepare_float(model: Any, config: QuantConfig, source: Any) -> tuple[Any, list[str]]:
    """Load and prepare ``model`` once; give every unnamed node a unique name (exclude needs names)."""
    from edgeq.io import as_model
    from edgeq.passes.canonicalize import CanonicalizePass
    from edgeq.passes.fuse_activations import FuseActivationsPass
    from edgeq.prepare import prepare_model

    model, _ = as_model(model)
    model, notes = prepare_model(model, target_opset=config.opset, data=source, upcast_float16=True)
    CanonicalizePass()(model)  # before calibration: its new tensors (GlobalAveragePool before Flatten) get ranges
    FuseActivationsPass()(model)  # likewise (a HardSigmoid's output where hard-swish was a chain)
    from edgeq.graph import all_nodes

    taken = {n.name for n in all_nodes(model.graph) if n.name}
    for i, node in enumerate(all_nodes(model.graph)):  # If/Loop/Scan bodies too: units are named
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    from edgeq.graph import freeze_constants

    freeze_constants(model)  # every variant shares the weights (copy_model clones); weights.py reuses their int8
    return model, notes


def _session(data: bytes, threads: int = ANALYSIS_THREADS) -> Any:
    """A CPU session for scoring, at a fixed thread count: the scores then do not depend on the
    machine's cores (calibrate/observe.py); the feeds run concurrently instead. The latency that
    decides is measured separately, at the user's thread count."""
    from edgeq.report.evaluate import cpu_session

    return cpu_session(data, threads)


def _stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    arrays = [np.asarray(a) for a in arrays]
    if all(a.ndim for a in arrays):
        try:
            return np.concatenate(arrays)
        except ValueError:
            pass
    return np.concatenate([a.reshape(-1) for a in arrays])


MAX_SHAPE_MISMATCH = 0.25  # share of eval samples whose output shape may differ from fp32's


def _sqnr_over_samples(refs: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> Any:
    """``SampleFidelity`` (SQNR, bootstrap lower bound, worst sample, 5th percentile) of one
    output over the samples where its shape matches fp32's. Outputs whose size depends on the
    values (detections after NMS, NonZero) may differ in shape: a few such samples are left out;
    more than a quarter of them is a changed answer (-inf). The target is judged on the bound
    (``edgeq.auto.samples``)."""
    from edgeq.auto.samples import SampleFidelity, energies

    same = [(r, g) for r, g in zip(refs, got) if r.shape == g.shape]
    if len(refs) - len(same) > MAX_SHAPE_MISMATCH * len(refs) or not same:
        return SampleFidelity.failed(len(refs))
    return SampleFidelity.of(*energies([r for r, _ in same], [g for _, g in same]))


class Workbench:
    """The prepared float model, its fp32 outputs on the eval feeds, and variant builders."""

    def __init__(self, model: Any, config: QuantConfig, feeds: list[dict[str, np.ndarray]],
                 metric: Metric | None = None, ref_samples: dict[str, list[np.ndarray]] | None = None,
                 threads: int = ANALYSIS_THREADS, width: int | None = None) -> None:
        self.model = model
        self.threads = threads  # onnxruntime's intra-op threads for scoring (calibrate/observe.py: why one)
        self.width = concurrency(8) if width is None else width  # feeds scored at once
        self.config = config
        self.feeds = feeds
        self.metric = metric
        self.ref_samples = self.samples(model) if ref_samples is None else ref_samples
        self.refs = {n: _stack(v) for n, v in self.ref_samples.items()}

    @classmethod
    def from_refs(cls, model: Any, config: QuantConfig, feeds: list[dict[str, np.ndarray]],
                  ref_samples: dict[str, list[np.ndarray]], metric: Metric | None = None,
                  width: int | None = None) -> Workbench:
        """A workbench whose fp32 outputs were computed elsewhere (a cluster worker's: ``remote.py``)."""
        return cls(model, config, feeds, metric, ref_samples, width=width)

    @classmethod
    def create(cls, model: Any, config: QuantConfig, feeds: list[dict[str, np.ndarray]],
               metric: Any = None) -> Workbench:
        return cls(model, config, feeds, resolve_metric(metric))

    def samples(self, model: Any) -> dict[str, list[np.ndarray]]:
        """Each output of ``model`` on each eval feed (a list per output name)."""
        sess = _session(model if isinstance(model, (bytes, InMemoryModel)) else model_bytes_of(model), self.threads)
        names = [o.name for o in sess.get_outputs()]
        got: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for _, outs in run_in_order(lambda feed: sess.run(None, feed), self.feeds, self.width):
            for n, out in zip(names, outs):
                got[n].append(np.asarray(out))
        return got

    def outputs(self, model: Any) -> dict[str, np.ndarray]:
        return {n: _stack(v) for n, v in self.samples(model).items()}

    def score(self, model: Any) -> Score:
        samples = self.samples(model)
        both = {n: _sqnr_over_samples(ref, samples[n]) for n, ref in self.ref_samples.items()
                if ref and ref[0].dtype.kind == "f"}
        value = None
        if self.metric is not None:
            value = float(self.metric(self.refs, {n: _stack(v) for n, v in samples.items()}))
        return Score.of(both, value, len(self.feeds))

    def own_score(self, model: Any) -> Score:
        """``model`` scored against its own outputs (exact): the fidelity of an answer that is the
        model as given, whatever the prepared float model gives."""
        samples = self.samples(model)
        both = {n: _sqnr_over_samples(v, v) for n, v in samples.items() if v and v[0].dtype.kind == "f"}
        stacked = {n: _stack(v) for n, v in samples.items()}
        value = None if self.metric is None else float(self.metric(stacked, stacked))
        return Score.of(both, value, len(self.feeds))

    def drift_db(self, model: Any, reference: Any) -> float:
        """The lowest SQNR of ``model``'s float outputs against ``reference``'s (not against the
        prepared float model's, as ``score`` judges) on the eval feeds."""
        ref, got = self.samples(reference), self.samples(model)
        return min((_sqnr_over_samples(r, got[n]).point for n, r in ref.items()
                    if r and r[0].dtype.kind == "f" and n in got), default=math.inf)

    def plan(self, exclude: Sequence[str] = (), model: Any = None) -> tuple[Any, Any]:
        """(plan, analysed copy of the model) for the static config with ``exclude``."""
        from edgeq.graph import copy_model, run_passes
        from edgeq.passes.pipeline import analysis_passes
        from edgeq.passes.plan import QuantPlan

        copy = copy_model(self.model if model is None else model)
        plan = QuantPlan()
        # ``exclude`` stands for the user's fp32 entries too (the other precisions stay)
        config = self.config.replace(precision=[(n, p) for n, p in self.config.precision.items() if p != "fp32"])
        run_passes(copy, analysis_passes(config.with_precision((n, "fp32") for n in exclude), plan))
        return plan, copy

    def units(self) -> list[Unit]:
        from edgeq.graph import all_nodes
        from edgeq.passes.plan import Role

        plan, copy = self.plan(self.config.exclude)
        out = []
        for node in all_nodes(copy.graph):  # a unit inside an If/Loop/Scan body is a unit too
            if plan.role(node) not in (Role.COMPUTE, Role.DYNAMIC):
                continue
            folded = tuple(f"{c.name}:{c.op_type}" for v in node.outputs for c in v.consumers()
                           if plan.role(c) == Role.FOLDED)
            out.append(Unit(node.name, node.op_type, folded))
        return out

    def build(self, table: Any, exclude: Sequence[str] = (), model: Any = None) -> Any:
        """``build_variant`` of ``model`` (default: the float model) with ranges ``table``."""
        from edgeq.stages.load import Prepared
        from edgeq.stages.variant import build_variant

        config = self.config.with_precision((n, "fp32") for n in exclude).replace(min_sqnr=None)
        return build_variant(Prepared.of(self.model if model is None else model), config, table)

    def build_mixed(self, table: Any, exclude: Sequence[str] = (), model: Any = None, *, int16: Sequence[str] = (),
                    fp16: Sequence[str] = (), per_token: Sequence[str] = (), dynamic: Sequence[str] = ()) -> Any:
        """``build`` with int16/fp16/int8-per-token/int8-dynamic units too (an fp16 unit takes its
        folded Relu/Clip, unless that is int16); the user's own precisions stay unless a unit here
        overrides them. ``build`` itself where all of those are empty."""
        if not (int16 or fp16 or per_token or dynamic):
            return self.build(table, exclude, model=model)
        from edgeq.stages.load import Prepared
        from edgeq.stages.variant import build_variant

        config = self.config
        folded = {u.name: [f.split(":")[0] for f in u.folded] for u in self.units()} if fp16 else {}
        int16_nodes = {*config.int16_nodes, *int16}
        entries = [(n, "fp32") for n in exclude] + [(n, "int16") for n in int16]
        entries += [(n, "int8-per-token") for n in per_token] + [(n, "int8-dynamic") for n in dynamic]
        entries += [(n, "fp16") for u in fp16 for n in [u, *folded.get(u, [])] if n not in int16_nodes]
        return build_variant(Prepared.of(self.model if model is None else model),
                             config.with_precision(entries).replace(min_sqnr=None), table)

    def bias_corrected(self, model: Any, means: dict[str, Any], exclude: Sequence[str]) -> Any:
        """A copy of ``model`` with bias correction (``means``: ``repairs.channel_means``) on
        exactly the nodes that will be int8 with ``exclude`` float (a float node must keep its
        float bias: the correction would be an error there); ``model`` where none changes."""
        from edgeq.auto.repairs import correct_bias
        from edgeq.graph import all_nodes

        plan, copy = self.plan(exclude, model=model)
        int8 = [n.name for n in all_nodes(copy.graph) if plan.role(n) != "float"]
        corrected, _ = correct_bias(model, None, self.config, nodes=int8, means=means)
        return model if corrected is None else corrected

    def ranking_trial(self, exclude: tuple[str, ...], units: list[str], name: str,
                      dynamic: bool) -> tuple[bool, tuple[str, ...]]:
        """(whether ``name`` can be int8 alone, the float units of its ranking trial): int8 alone
        where it can ("only"), else every unit int8 but it ("all but"); ``exclude``: the
        configuration's own float units (its float model: this workbench's), ``dynamic``: ``name``
        is a dynamic MatMul/Gemm (int8 alone whatever its neighbours)."""
        from edgeq.graph import all_nodes

        others = tuple(n for n in units if n != name)
        alone = dynamic
        if not alone:
            plan, copy = self.plan(exclude + others)
            node = next((n for n in all_nodes(copy.graph) if n.name == name), None)
            alone = node is not None and plan.role(node) != "float"
        return alone, exclude + others if alone else exclude + (name,)
