"""``auto_quantize``: per-layer precision chosen by measured error and measured speed.

Order of work (each step measured on the evaluation feeds against the fp32 outputs):

1. Calibrate once (every activation histogrammed, see ``calib``); try each range method
   uniformly, then, for the tensors where the methods disagree most, each method per tensor
   (greedy on the output SQNR: no method wins on every network).
2. Repairs before any fallback: cross-layer equalization, SmoothQuant, bias correction; each is
   kept only if it raises the fidelity (the float graph changes, so ranges are re-collected).
3. Precision ladder per quantizable node: int8, int16 activations (int8 weights), fp16 (only
   where the provider has fp16 kernels: not on "cpu", where onnxruntime casts fp16 Conv/MatMul/
   Gemm back to fp32), fp32. Units are ranked most sensitive first (by what keeping each alone
   float buys); binary searches over the ranked prefix find the fewest units that, in fp32 (and,
   separately, in each ladder precision), reach the target; float units are then quantized back
   to int8 where the target holds, and each one still float tries the ladder precisions before
   staying fp32. int16 tensors use min/max ranges (65536 levels need no clipping) where no int8
   node shares them.
4. Latency: float gaps between int8 regions are quantized back where fidelity allows (fewer
   precision changes); isolated int8 nodes are dropped; every configuration tried is timed on the
   provider at ``threads`` (interleaved medians). The fastest one meeting the target wins; if it
   is not faster than fp32, the fp32 model is returned with that verdict. So an int16 or fp16
   layer survives only in a configuration that measured faster than the alternatives (on the CPU
   provider int16 runs as a float kernel between Q/DQ: it rarely pays there; its value is
   fidelity on integer-only targets).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

from edgeq.auto.calib import METHODS, calibrate_once
from edgeq.config import QuantConfig
from edgeq.errors import UsageError

__all__ = ["auto_quantize"]

logger = logging.getLogger(__name__)

REFINE_TENSORS = 4  # tensors whose range method is chosen one by one
MAX_REQUANTIZE = 64  # float units tried back in int8 after the binary search
MAX_LADDER = 16  # fp32 units then tried on the ladder (each rung is one more build)
LADDER_NAMES = {"int16": "int16 activations", "fp16": "fp16"}


@dataclasses.dataclass
class _Config:
    name: str
    exclude: tuple[str, ...]
    score: Any
    result: Any
    model: Any  # the float model it was built from
    methods: dict[str, str]
    base: str
    bias: bool = False  # bias correction applied to the nodes that are int8 in this configuration
    latency_ms: float | None = None
    data: bytes | None = None
    int16: tuple[str, ...] = ()  # units with int16 activations (int8 weights)
    fp16: tuple[str, ...] = ()  # units computed in fp16


def ladder(provider: str) -> tuple[str, ...]:
    """The precisions tried between int8 and fp32, first choice first: fp16 only where the
    provider has fp16 kernels (not onnxruntime's CPU provider: measured no faster than fp32)."""
    return ("int16",) if provider == "cpu" else ("fp16", "int16")


class _Search:
    def __init__(self, bench: Any, source: Any, min_sqnr: float | None, min_score: float | None, bar: Any) -> None:
        self.bench, self.source, self.bar = bench, source, bar
        self.min_sqnr, self.min_score = min_sqnr, min_score
        self.tried: list[_Config] = []
        self.task = bar.add_task("auto: searching", total=None)

    def meets(self, c: _Config) -> bool:
        return c.score.meets(self.min_sqnr, self.min_score)

    def key(self, c: _Config) -> tuple:
        metric = c.score.metric if c.score.metric is not None else 0.0
        return (self.meets(c), metric, c.score.min_sqnr, -len(c.exclude))

    def build(self, name: str, model: Any, cal: Any, methods: dict[str, str], base: str,
              exclude: tuple[str, ...] = (), record: bool = True, bias: bool = False,
              int16: tuple[str, ...] = (), fp16: tuple[str, ...] = ()) -> _Config:
        from edgeq.auto.workbench import model_bytes_of

        self.bar.update(self.task, description=f"auto: {name}")
        # fp16 units keep their float weights: no bias correction for them either
        target = self._bias_corrected(model, cal, tuple(exclude) + tuple(fp16)) if bias else model
        if int16 or fp16:
            table = cal.table_for({**methods, **self._int16_minmax(exclude, int16, model)}, base)
            result = self._variant(table, exclude, target, int16=int16, fp16=fp16)
        else:
            result = self.bench.build(cal.table_for(methods, base), exclude, model=target)
        data = model_bytes_of(result.model)
        c = _Config(name, tuple(exclude), self.bench.score(data), result, model, dict(methods), base, bias, data=data,
                    int16=tuple(int16), fp16=tuple(fp16))
        self.bar.advance(self.task)
        logger.info("auto: %s -> min SQNR %.2f dB", name, c.score.min_sqnr)
        if record:
            self.tried.append(c)
        return c

    def _variant(self, table: Any, exclude: tuple[str, ...], model: Any, *, int16: tuple[str, ...],
                 fp16: tuple[str, ...]) -> Any:
        """``Workbench.build`` with int16/fp16 units too (an fp16 unit takes its folded Relu/Clip)."""
        import edgeq

        config = self.bench.config  # the user's own int16_nodes/fp16_nodes stay
        folded = {u.name: [f.split(":")[0] for f in u.folded] for u in self.bench.units()} if fp16 else {}
        int16_nodes = tuple(dict.fromkeys([*config.int16_nodes, *int16]))
        fp16_nodes = tuple(dict.fromkeys(n for u in [*config.fp16_nodes, *fp16] for n in [u, *folded.get(u, [])]
                                         if n not in int16_nodes))
        config = config.replace(exclude=tuple(dict.fromkeys([*config.exclude, *exclude])), min_sqnr=None,
                                int16_nodes=int16_nodes, fp16_nodes=fp16_nodes)
        return edgeq.quantize(model, config, None, ranges=table, progress=False)

    def _int16_minmax(self, exclude: tuple[str, ...], int16: tuple[str, ...], model: Any) -> dict[str, str]:
        """{tensor: "minmax"} for the activations of int16 units that no int8 node produces or
        reads: 65536 levels resolve a min/max range finely; clipping would be the only error left."""
        from edgeq.passes.plan import Role
        from edgeq.passes.select import data_inputs

        if not int16:
            return {}
        plan, copy = self.bench.plan(exclude, model=model)
        wanted, out = set(int16), {}
        for node in copy.graph:
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
        """A copy of ``model`` with bias correction on exactly the nodes that will be int8 (a
        float node must keep its float bias: the correction would be an error there)."""
        from edgeq.auto.repairs import correct_bias

        plan, copy = self.bench.plan(exclude, model=model)
        int8 = [n.name for n in copy.graph if plan.role(n) != "float"]
        corrected, _ = correct_bias(model, cal, self.bench.config, nodes=int8)
        return model if corrected is None else corrected


def _disagreement(cal: Any, name: str) -> float:
    widths = [cal.range(name, m).hi - cal.range(name, m).lo for m in METHODS]
    return max(widths) / max(min(widths), 1e-12)


def _refine_methods(search: _Search, model: Any, cal: Any, best: _Config, roots: list[str]) -> _Config:
    ranked = sorted((n for n in roots if n in cal), key=lambda n: -_disagreement(cal, n))
    ranked = [n for n in ranked if _disagreement(cal, n) > 1.2][:REFINE_TENSORS]
    current = best
    for name in ranked:
        for method in METHODS:
            if method == current.methods.get(name, current.base):
                continue
            trial = search.build(f"range {name}: {method}", model, cal, {**current.methods, name: method},
                                 current.base, current.exclude, record=False)
            if search.key(trial) > search.key(current) and trial.score.min_sqnr > current.score.min_sqnr + 0.05:
                current = trial
    if current is not best:
        current.name = f"int8, per-tensor ranges ({len(current.methods)} changed)"
        search.tried.append(current)
    return current


def _roots(bench: Any, exclude: tuple[str, ...]) -> list[str]:
    plan, _ = bench.plan(exclude)
    return [v.name for v in plan.roots() if v.const_value is None]


def auto_quantize(
    model: Any,
    data: Any,
    *,
    min_sqnr: float | None = 30.0,
    metric: Any = None,
    min_score: float | None = None,
    provider: str = "cpu",
    threads: int = 1,
    eval_data: Any = None,
    config: QuantConfig | None = None,
    progress: bool = True,
    max_eval: int = 16,
) -> Any:
    """Quantize ``model`` choosing per-layer precision (see the module docstring).

    ``min_sqnr``: every float output's SQNR vs fp32 (dB) on the eval feeds must reach it.
    ``metric``: ``"module:function"`` or a callable ``(reference_outputs, outputs) -> score``
    (dicts of output name -> array stacked over the eval feeds), with ``min_score``.
    Returns an ``edgeq.QuantResult`` whose ``report["auto"]`` says what was tried and why.
    """
    from edgeq.auto.analysis import eval_feeds
    from edgeq.auto.workbench import Workbench, prepare_float, reusable_source
    from edgeq.calibrate.collect import progress_bar
    from edgeq.quantizer import load_input

    if min_score is not None and metric is None:
        raise UsageError("min_score needs a metric: pass metric='module:function' (or --metric)")
    if min_sqnr is None and min_score is None:
        raise UsageError("give a fidelity target: min_sqnr (dB) and/or metric with min_score")
    if threads < 1:
        raise UsageError(f"threads must be at least 1, got {threads}")
    config = (config or QuantConfig()).replace(mode="static", min_sqnr=None)
    loaded, source_path = load_input(model)
    source = reusable_source(data, loaded)
    float_model, _ = prepare_float(loaded, config, source)
    feeds, note = eval_feeds(eval_data, source, float_model, max_eval)
    bench = Workbench.create(float_model, config, feeds, metric)
    notes = [n for n in [note] if n]
    rungs = ladder(provider)
    notes.append(f"precisions per layer: int8, {', '.join(LADDER_NAMES[r] for r in rungs)}, fp32"
                 + ("; fp16 is not tried on the CPU provider (onnxruntime has no fp16 Conv/MatMul/Gemm CPU "
                    "kernels: it casts them back to fp32, so fp16 cannot be faster there)" if provider == "cpu" else ""))
    with progress_bar(progress) as bar:
        search = _Search(bench, source, min_sqnr, min_score, bar)
        cal = calibrate_once(float_model, source, config, progress=False)
        uniform = [search.build(f"int8 uniform {m}", float_model, cal, {}, m) for m in METHODS]
        best = max(uniform, key=search.key)
        best = _refine_methods(search, float_model, cal, best, _roots(bench, ()))
        repairs, best, cal = _repair(search, best, cal, config)
        bench.model = best.model
        fallback: dict[str, dict[str, Any]] = {}
        if not search.meets(best):
            best, fallback = _fallback(search, best, cal, rungs)
        from edgeq.auto.placement import place

        chosen, verdict, dropped = place(search, best, cal, float_model, provider, threads, feeds[0])
    from edgeq.auto.summary import auto_section

    result = chosen.result
    result.source = source_path
    result.report["auto"] = auto_section(search, chosen, verdict, repairs, fallback, dropped, notes,
                                         min_sqnr=min_sqnr, min_score=min_score, provider=provider, threads=threads)
    result.report["config"]["mode"] = "auto"
    return result


def _repair(search: _Search, best: _Config, cal: Any, config: QuantConfig) -> tuple[list[dict], _Config, Any]:
    """Equalization and SmoothQuant change the float graph exactly (ranges re-collected);
    bias correction is tried last and stays a property of the configuration, applied at each
    build to the nodes that are int8 there."""
    from edgeq.auto.repairs import REPAIRS, correct_bias

    records = []
    for name, repair in REPAIRS:
        model, detail = repair(best.model, cal, config)
        record: dict[str, Any] = {"repair": name, "kept": False, "detail": detail, "before_db": _db(best.score.min_sqnr)}
        if model is not None:
            new_cal = calibrate_once(model, search.source, config, progress=False)
            trial = search.build(f"int8 + {name}", model, new_cal, best.methods, best.base, best.exclude)
            record["after_db"] = _db(trial.score.min_sqnr)
            if search.key(trial) > search.key(best) and trial.score.min_sqnr > best.score.min_sqnr + 0.05:
                record["kept"] = True
                best, cal = trial, new_cal
        records.append(record)
    model, detail = correct_bias(best.model, cal, config)
    record = {"repair": "bias correction", "kept": False, "detail": detail, "before_db": _db(best.score.min_sqnr)}
    if model is not None:
        trial = search.build("int8 + bias correction", best.model, cal, best.methods, best.base, best.exclude,
                             bias=True)
        record["after_db"] = _db(trial.score.min_sqnr)
        if search.key(trial) > search.key(best) and trial.score.min_sqnr > best.score.min_sqnr + 0.05:
            record["kept"] = True
            best = trial
    records.append(record)
    return records, best, cal


def _noise(sqnr_db: float) -> float:
    return 10.0 ** (-sqnr_db / 10.0) if math.isfinite(sqnr_db) else 0.0


def _fallback(search: _Search, best: _Config, cal: Any, rungs: tuple[str, ...] = ()) -> tuple[_Config, dict[str, dict[str, Any]]]:
    """Rank units by the output noise each adds alone (SQNR with only it int8; for a light op,
    which cannot be int8 alone, the noise removed by keeping it float), then find the smallest
    ranked prefix that meets the target in fp32 (binary search: noise adds up, so it is
    monotone) and, recorded beside it, in each ladder precision; then re-quantize and ladder."""
    units = [u.name for u in search.bench.units() if u.name not in best.exclude]
    noise, only_db = {}, {}
    full = _noise(best.score.min_sqnr)
    for name in units:
        others = tuple(n for n in units if n != name)
        plan, copy = search.bench.plan(best.exclude + others)
        node = next((n for n in copy.graph if n.name == name), None)
        if node is not None and plan.role(node) != "float":
            trial = search.build(f"only {name}", best.model, cal, best.methods, best.base,
                                 best.exclude + others, record=False, bias=best.bias)
            only_db[name] = trial.score.min_sqnr
            noise[name] = _noise(trial.score.min_sqnr)
        else:
            trial = search.build(f"all but {name}", best.model, cal, best.methods, best.base,
                                 best.exclude + (name,), record=False, bias=best.bias)
            noise[name] = max(full - _noise(trial.score.min_sqnr), 0.0)
    ranked = sorted(units, key=lambda n: -noise[n])
    for rung in rungs:  # the ladder precisions for the ranked prefix, before fp32
        _prefix(search, best, cal, ranked, rung)
    found = _prefix(search, best, cal, ranked, "fp32")
    if found is None:
        return best, {}
    tried: dict[str, dict[str, Any]] = {}
    found = _requantize(search, found, cal, [n for n in reversed(ranked) if n in found.exclude], tried)
    _ladder(search, found, cal, order=[n for n in reversed(ranked) if n in found.exclude], rungs=rungs, tried=tried)
    why = {name: {"rank": i + 1, "of": len(ranked), "only_int8_sqnr_db": _db(only_db[name]) if name in only_db else None,
                  "tried_db": tried.get(name, {})}
           for i, name in enumerate(ranked)}
    return found, why


def _prefix(search: _Search, best: _Config, cal: Any, ranked: list[str], rung: str) -> _Config | None:
    """The smallest prefix of ``ranked`` that, in ``rung`` ("fp32", "int16" or "fp16"), meets
    the target (binary search); None when even the whole list does not."""
    lo, hi, found = 1, len(ranked), None
    while lo <= hi:
        k = (lo + hi) // 2
        chosen = tuple(ranked[:k])
        if rung == "fp32":
            trial = search.build(f"int8, {k} most sensitive float", best.model, cal, best.methods, best.base,
                                 best.exclude + chosen, bias=best.bias)
        else:
            trial = search.build(f"int8, {k} most sensitive in {LADDER_NAMES[rung]}", best.model, cal,
                                 best.methods, best.base, best.exclude, bias=best.bias,
                                 int16=chosen if rung == "int16" else (), fp16=chosen if rung == "fp16" else ())
        if search.meets(trial):
            found, hi = trial, k - 1
        else:
            lo = k + 1
    return found


def _requantize(search: _Search, found: _Config, cal: Any, order: list[str],
                tried: dict[str, dict[str, Any]] | None = None) -> _Config:
    """Quantize float units back one at a time while the target holds: first those in gaps
    between int8 regions (fewer precision changes), then the least sensitive. The ranking is an
    estimate (noise does not add exactly); this pass corrects it with measurements."""
    from edgeq.auto.latency import gaps

    plan, copy = search.bench.plan(found.exclude)
    in_gaps = gaps(plan, copy.graph, order)
    current = found
    for name in [*in_gaps, *(n for n in order if n not in in_gaps)][:MAX_REQUANTIZE]:
        exclude = tuple(n for n in current.exclude if n != name)
        trial = search.build(f"re-quantize {name}", found.model, cal, found.methods, found.base, exclude,
                             record=False, bias=found.bias)
        if tried is not None:
            tried.setdefault(name, {})["int8"] = _db(trial.score.min_sqnr)
        if search.meets(trial):
            current = trial
    if current is not found:
        current.name = f"int8, {len(current.exclude)} float (gaps merged, least sensitive re-quantized)"
        search.tried.append(current)
    return current


def _ladder(search: _Search, found: _Config, cal: Any, *, order: list[str], rungs: tuple[str, ...],
            tried: dict[str, dict[str, Any]]) -> _Config:
    """From ``found`` (meets the target), give each fp32 unit the first ladder precision that
    keeps the target, least sensitive first; recorded as one more configuration beside
    ``found``, so that timing decides between them."""
    current = found
    for name in [n for n in order if n in found.exclude][:MAX_LADDER]:
        for rung in rungs:
            exclude = tuple(n for n in current.exclude if n != name)
            int16 = current.int16 + ((name,) if rung == "int16" else ())
            fp16 = current.fp16 + ((name,) if rung == "fp16" else ())
            trial = search.build(f"{LADDER_NAMES[rung]} {name}", found.model, cal, found.methods, found.base,
                                 exclude, record=False, bias=found.bias, int16=int16, fp16=fp16)
            tried.setdefault(name, {})[rung] = _db(trial.score.min_sqnr)
            if search.meets(trial):
                tried[name].setdefault("meets", []).append(rung)
                current = trial
                break
    same = [c for c in search.tried if (set(c.exclude), set(c.int16), set(c.fp16), c.bias)
            == (set(current.exclude), set(current.int16), set(current.fp16), current.bias)]
    if current is not found and not same:  # (the binary search may have built it already)
        parts = [f"{len(current.int16)} int16 activations" if current.int16 else "",
                 f"{len(current.fp16)} fp16" if current.fp16 else "",
                 f"{len(current.exclude)} fp32" if current.exclude else ""]
        current.name = "int8, " + ", ".join(p for p in parts if p) + " (precision ladder)"
        search.tried.append(current)
    return current


def _db(value: float) -> Any:
    return round(value, 3) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
