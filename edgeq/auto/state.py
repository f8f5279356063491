"""The state of one auto search: the configurations built so far, how to build and score one
more, and the time budget.

``Search.build`` is the unit of work (``build_variant`` with reused ranges, then a score on the
evaluation feeds). ``Search.over_budget()`` tells the optional steps (per-tensor range methods,
repairs, re-quantizing, the precision ladder, the per-unit ranking) to stop early once
``time_budget_s`` has passed; the steps that make the target hold run regardless.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["Config", "Ranking", "Search"]

logger = logging.getLogger(__name__)

SQNR_MARGIN_DB = 0.5  # headroom over the user's min_sqnr while searching (see Search.__init__)


@dataclasses.dataclass(eq=False)
class Config:
    name: str
    exclude: tuple[str, ...]
    score: Any
    result: Any = dataclasses.field(repr=False)  # its QuantResult (built here on first use where a worker scored it)
    model: Any  # the float model it was built from
    methods: dict[str, str]
    base: str
    bias: bool = False  # bias correction applied to the nodes that are int8 in this configuration
    latency_ms: float | None = None
    data: bytes | None = dataclasses.field(default=None, repr=False)  # what onnxruntime loads (likewise)
    int16: tuple[str, ...] = ()  # units with int16 activations (int8 weights)
    fp16: tuple[str, ...] = ()  # units computed in fp16
    per_token: tuple[str, ...] = ()  # MatMul/Gemm units with per-token dynamic activations (passes/per_token.py)
    dynamic: tuple[str, ...] = ()  # MatMul/Gemm units with per-tensor dynamic activations where the rest are per-token
    prefix: str = ""  # the ladder precision of a ranked-prefix configuration (search._prefix), else ""
    # a configuration a worker built and scored (``ahead.py``): what its graph holds, as the worker
    # counted it, and how this process builds the same result when it is first asked for
    facts: dict[str, Any] | None = dataclasses.field(default=None, repr=False)
    later: Callable[[], Any] | None = dataclasses.field(default=None, repr=False)

    @property
    def layout(self) -> tuple:
        """What it builds, order aside: its per-layer precisions and whether bias is corrected."""
        return (frozenset(self.exclude), frozenset(self.int16), frozenset(self.fp16), frozenset(self.per_token),
                frozenset(self.dynamic), self.bias)

    @property
    def built(self) -> bool:
        return self.__dict__.get("_result") is not None

    def has_int8(self) -> bool:
        """Whether its graph runs or feeds an int8 kernel (``latency.has_int8``), without building it here."""
        from edgeq.auto.latency import has_int8

        return has_int8(self.result.model) if self.built or self.facts is None else bool(self.facts["int8"])

    def precision_changes(self) -> int:
        """``latency.precision_changes`` of its graph, without building it here."""
        from edgeq.auto.latency import precision_changes

        return precision_changes(self.result.model) if self.built or self.facts is None else int(self.facts["changes"])


def _result(self: Config) -> Any:
    if self.__dict__.get("_result") is None and self.later is not None:
        self.__dict__["_result"] = self.later()
    return self.__dict__.get("_result")


def _data(self: Config) -> Any:
    if self.__dict__.get("_data") is None and self.later is not None:
        from edgeq.auto.workbench import model_bytes_of

        self.__dict__["_data"] = model_bytes_of(self.result.model)
    return self.__dict__.get("_data")


# ``result`` and ``data`` are read through these: built on first use where a worker scored the
# configuration (``later``), as this process would have built them
Config.result = property(_result, lambda self, value: self.__dict__.__setitem__("_result", value))  # type: ignore[assignment]
Config.data = property(_data, lambda self, value: self.__dict__.__setitem__("_data", value))  # type: ignore[assignment]


@dataclasses.dataclass
class Ranking:
    """What the fallback ranked (``search._fallback``): the configuration it started from, its
    ranges, the units most sensitive first, the output noise each adds, the ladder's precisions."""

    best: Config
    cal: Any
    ranked: list[str]
    noise: dict[str, float]
    rungs: tuple[str, ...]


class Search:
    def __init__(self, bench: Any, source: Any, min_sqnr: float | None, min_score: float | None, bar: Any,
                 time_budget_s: float | None = None) -> None:
        self.bench, self.source, self.bar = bench, source, bar
        # the SQNR is estimated on a few samples: the search aims SQNR_MARGIN_DB above the target
        # so that it holds on data it has not seen (resnet224: 30.0 dB on 16 samples, 29.2 held out)
        self.min_sqnr = None if min_sqnr is None else min_sqnr + SQNR_MARGIN_DB
        self.min_score = min_score
        self.tried: list[Config] = []
        self.task = bar.add_task("auto: searching", total=None)
        self.started = time.perf_counter()
        self.time_budget_s = time_budget_s
        self.cut: list[str] = []  # the steps the budget cut short, for the report
        # float models whose int8 MatMul/Gemm weights are rounded by GPTQ (passes/gptq.py), by
        # id: (the model, kept alive; the Hessians by weight, ``passes.weights.gptq_rounding``)
        self.gptq: dict[int, tuple[Any, dict[tuple, Any]]] = {}
        # float models whose weights were fitted to the range-calibration samples (SmoothQuant's
        # factors, GPTQ's rounding), by id: what was fitted. Those samples are in sample for them
        # whatever ranges judge them (gate.py (4)).
        self.fitted: dict[int, str] = {}
        self.ranking: Ranking | None = None  # set by the fallback, reused by the gate's retarget
        self.before_fallback: tuple[Config, Any, tuple[str, ...]] | None = None  # (best, cal, rungs)
        self.timing: tuple[dict, str, int] | None = None  # (feed, provider, threads) where auto times
        self._unit_ms: dict[str, float] | None = None
        from edgeq.auto.ahead import Ahead

        self.ahead = Ahead.open(self)  # the chains' next builds on a cluster's workers (ahead.py)

    def unit_ms(self) -> dict[str, float]:
        """{unit: fp32 ms per run} from one profile of the float model where auto times
        (``unit_time.py``), once; empty where there is nothing to time it on."""
        if self._unit_ms is None:
            from edgeq.auto.unit_time import unit_times

            self._unit_ms = {}
            if self.timing is not None:
                feed, provider, threads = self.timing
                nodes = unit_times(self.bench.model, feed, provider, threads)
                # a unit's time is its node's and its folded Relu/Clip's (onnxruntime fuses them and
                # may name the fused node after either)
                self._unit_ms = {u.name: nodes.get(u.name, 0.0) + sum(nodes.get(f.split(":")[0], 0.0) for f in u.folded)
                                 for u in self.bench.units() if nodes}
        return self._unit_ms

    def over_budget(self, step: str = "") -> bool:
        """True once the time budget is spent (the step asking is recorded once)."""
        if self.time_budget_s is None or time.perf_counter() - self.started < self.time_budget_s:
            return False
        if step and step not in self.cut:
            self.cut.append(step)
            logger.info("auto: time budget of %.0f s spent: %s cut short", self.time_budget_s, step)
        return True

    def matmul_units(self) -> frozenset[str]:
        """The MatMul/Gemm units the per-token rung changes (the other units stay fp32 on it): not
        those already per-token dynamic (after ``_per_token_dynamic``, every MatMul between float ops)."""
        plan, _ = self.bench.plan(())
        done = {n.name for n in plan.per_token}
        return frozenset(u.name for u in self.bench.units() if u.op in ("MatMul", "Gemm") and u.name not in done)

    def meets(self, c: Config) -> bool:
        return c.score.meets(self.min_sqnr, self.min_score)

    def key(self, c: Config) -> tuple:
        metric = c.score.metric if c.score.metric is not None else 0.0
        if getattr(self.bench.metric, "cap_at_goal", False) and self.min_score is not None:
            metric = min(metric, self.min_score)  # a guard met ranks nothing (auto/top1.py)
        return (self.meets(c), metric, c.score.min_sqnr, -len(c.exclude))

    def build(self, name: str, model: Any, cal: Any, methods: dict[str, str], base: str,
              exclude: tuple[str, ...] = (), record: bool = True, bias: bool = False,
              int16: tuple[str, ...] = (), fp16: tuple[str, ...] = (), per_token: tuple[str, ...] = (),
              dynamic: tuple[str, ...] = ()) -> Config:
        args = (model, cal, methods, base, exclude, bias, int16, fp16, per_token, dynamic)
        if self.ahead is not None:  # a worker built and scored it (ahead.py): built here only when asked for
            from edgeq.auto.ahead import recipe_key

            hit = self.ahead.take(recipe_key(*args))
            if hit is not None:
                self.bar.update(self.task, description=f"auto: {name}")
                score, data, facts = hit
                c = self._scored(name, None, data, score, model, methods, base, exclude, record, bias, int16, fp16,
                                 per_token, dynamic)
                c.facts, c.later = facts, lambda: self._assemble(name, *args)[0]
                return c
        result, data = self._assemble(name, *args)
        return self._scored(name, result, data, self.bench.score(data), model, methods, base, exclude, record, bias,
                            int16, fp16, per_token, dynamic)

    def run_ahead(self, state: Any, probe: Any, after: Any, build: Any, likely: Any = None) -> None:
        """Before a chain's step: the builds its next steps may ask for (``build(state)``: the
        ``build`` keyword arguments of that state's step, with ``cal``; ``likely(state)``: how
        likely that step meets the target), submitted to the workers, this step built here where
        none has it (``ahead.py``); nothing without a cluster."""
        if self.ahead is None or state is None:
            return
        from edgeq.auto.ahead import frontier

        futures = frontier(state, probe, after, self.ahead.width + 1, likely)  # (+1: this step, built here)
        self.ahead.plan([build(s) for _, s in futures], here_first=True)

    def likely(self, exclude: tuple[str, ...], reference: Config) -> float:
        """How likely the configuration with ``exclude`` float (the rest int8, as ``reference``
        builds them) meets the SQNR target, by the additive noise model: the ranking's noise of
        its int8 units (``self.ranking``), scaled so that ``reference``'s add up to its measured
        noise. 0.5 where there is no ranking or SQNR target, or within 0.5 dB of the target;
        else 0.85 or 0.15. Only where to look ahead depends on it (``ahead.py``), never a decision."""
        import math

        ranking = self.ranking
        if ranking is None or self.min_sqnr is None or not math.isfinite(reference.score.min_sqnr):
            return 0.5
        skip = set(exclude)
        ours = sum(max(ranking.noise.get(u, 0.0), 0.0) for u in ranking.ranked if u not in skip)
        skip = set(reference.exclude)
        theirs = sum(max(ranking.noise.get(u, 0.0), 0.0) for u in ranking.ranked if u not in skip)
        if theirs <= 0:
            return 0.5
        estimate = 10.0 ** (-reference.score.min_sqnr / 10.0) * ours / theirs
        if estimate <= 0:
            return 0.85
        margin = self.min_sqnr + 10.0 * math.log10(estimate)  # dB below the target's noise: < 0 meets
        return 0.5 if abs(margin) < 0.5 else (0.85 if margin < 0 else 0.15)

    def build_each(self, name_and_exclude: Iterable[tuple[str, tuple[str, ...]]], model: Any, cal: Any,
                   methods: dict[str, str], base: str, *, bias: bool = False, step: str = "") -> Iterator[Config]:
        """``build(name, model, cal, methods, base, exclude, record=False, bias=bias)`` for each
        ``(name, exclude)`` in order, each variant scored (onnxruntime, which lets go of the
        interpreter) while the next is built (Python, which does not): the same configurations,
        on two cores in about two thirds of the time (MiniLM's 36 ranking builds). Stops, the
        rest not built, once the time budget is spent (``step`` is what it cuts short)."""
        from concurrent.futures import ThreadPoolExecutor

        def scored(pending: tuple) -> Config:
            name, exclude, result, data, scoring = pending
            return self._scored(name, result, data, scoring.result(), model, methods, base, exclude, False, bias)

        with ThreadPoolExecutor(1, thread_name_prefix="edgeq-score") as pool:
            pending = None
            for name, exclude in name_and_exclude:
                if self.over_budget(step):
                    break
                result, data = self._assemble(name, model, cal, methods, base, exclude, bias)
                scoring = pool.submit(self.bench.score, data)
                if pending is not None:
                    yield scored(pending)
                pending = (name, exclude, result, data, scoring)
            if pending is not None:
                yield scored(pending)

    def _assemble(self, name: str, model: Any, cal: Any, methods: dict[str, str], base: str,
                  exclude: tuple[str, ...], bias: bool, int16: tuple[str, ...] = (), fp16: tuple[str, ...] = (),
                  per_token: tuple[str, ...] = (), dynamic: tuple[str, ...] = ()) -> tuple[Any, Any]:
        """The variant's ``QuantResult`` and its bytes for onnxruntime (not scored)."""
        from edgeq.auto.workbench import model_bytes_of
        from edgeq.passes.weights import gptq_rounding

        self.bar.update(self.task, description=f"auto: {name}")
        # fp16 units keep their float weights: no bias correction for them either
        target = self._bias_corrected(model, cal, tuple(exclude) + tuple(fp16)) if bias else model
        registered = self.gptq.get(id(model))
        with gptq_rounding(registered[1] if registered is not None and registered[0] is model else {}):
            result = self.bench.build_mixed(self._table(cal, methods, base, exclude, int16, model), exclude, target,
                                            int16=int16, fp16=fp16, per_token=per_token, dynamic=dynamic)
        return result, model_bytes_of(result.model)

    def _scored(self, name: str, result: Any, data: Any, score: Any, model: Any, methods: dict[str, str], base: str,
                exclude: tuple[str, ...], record: bool, bias: bool, int16: tuple[str, ...] = (),
                fp16: tuple[str, ...] = (), per_token: tuple[str, ...] = (), dynamic: tuple[str, ...] = ()) -> Config:
        c = Config(name, tuple(exclude), score, result, model, dict(methods), base, bias, data=data,
                   int16=tuple(int16), fp16=tuple(fp16), per_token=tuple(per_token), dynamic=tuple(dynamic))
        self.bar.advance(self.task)
        logger.info("auto: %s -> min SQNR %.2f dB", name, c.score.min_sqnr)
        if record:
            self.tried.append(c)
        return c

    def _table(self, cal: Any, methods: dict[str, str], base: str, exclude: tuple[str, ...],
               int16: tuple[str, ...], model: Any) -> Any:
        """The ranges a build takes: ``methods`` (else ``base``), min/max where int16 alone reads a tensor."""
        return cal.table_for({**methods, **self._int16_minmax(exclude, int16, model)}, base)

    def _int16_minmax(self, exclude: tuple[str, ...], int16: tuple[str, ...], model: Any) -> dict[str, str]:
        """{tensor: "minmax"} for the activations of int16 units that no int8 node produces or
        reads: 65536 levels resolve a min/max range finely; clipping would be the only error left."""
        from edgeq.passes.plan import Role
        from edgeq.passes.select import data_inputs

        if not int16:
            return {}
        from edgeq.graph import all_nodes

        plan, copy = self.bench.plan(exclude, model=model)
        wanted, out = set(int16), {}
        for node in all_nodes(copy.graph):
            if node.name not in wanted:
                continue
            after = [c for v in node.outputs for c in v.consumers() if plan.role(c) == Role.FOLDED]
            for value in [*data_inputs(node), *(after[0].outputs if after else node.outputs)]:
                if value is None or value.const_value is not None or plan.values.get(value, value) is not value:
                    continue
                readers = [c for c in value.consumers() if c.name not in wanted and plan.role(c) != Role.FLOAT]
                producer = value.producer()
                if producer is not None and plan.role(producer) == Role.FOLDED:
                    producer = producer.inputs[0].producer()
                own = producer is None or producer.name in wanted or plan.role(producer) == Role.FLOAT
                if own and not readers and value.name:
                    out[value.name] = "minmax"
        return out

    def _bias_corrected(self, model: Any, cal: Any, exclude: tuple[str, ...]) -> Any:
        """``Workbench.bias_corrected`` with ``cal``'s channel means."""
        from edgeq.auto.repairs import channel_means

        return self.bench.bias_corrected(model, channel_means(cal), exclude)
