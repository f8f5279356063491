"""``auto_quantize``: per-layer precision chosen by measured error and measured speed.

Order of work (each step measured on the evaluation feeds against the fp32 outputs):

1. Calibrate once (every activation histogrammed, see ``calib``); try each range method
   uniformly, then, for the tensors where the methods disagree most, each method per tensor
   (greedy on the output SQNR: no method wins on every network). Before that, on the CPU
   provider, the int8-everywhere builds are timed against fp32: where none is 3% faster, the
   answer is fp32 at once (``ceiling``: the later steps keep layers float, never faster).
2. Repairs before any fallback: cross-layer equalization, SmoothQuant, bias correction; each is
   kept only if it raises the fidelity (the float graph changes, so ranges are re-collected).
   Then, where the target still fails and the MatMul/Gemm between float ops run dynamic int8 (one
   activation scale per tensor), the same with one scale per row (per token, CPU and QDQ only),
   kept only if it raises the fidelity: every later build uses it (the per-tensor configurations
   built so far still compete on latency); then, still short, SmoothQuant on those MatMuls'
   inputs (a Mul on the MatMul branch where a LayerNorm output also feeds the residual), alpha
   0.5 and 0.6, kept only if it raises the fidelity. Where per-token MatMuls met the target, GPTQ
   rounds the weights (below; headroom) and their inputs go back to one scale per tensor (with
   outlier channels), least harm per unit of work first, as many as the target allows
   (``fronts.py``): more configurations for timing to judge.
3. Precision ladder per quantizable node: int8, int8 per-token dynamic (MatMul/Gemm only, CPU,
   format qdq: one activation scale per row at run time, passes/per_token.py), int16 activations
   (int8 weights), fp16 (only where the provider has fp16 kernels: not on "cpu", where onnxruntime
   casts fp16 Conv/MatMul/Gemm back to fp32), fp32. Units are ranked most sensitive first (by what keeping each alone
   float buys); binary searches over the ranked prefix find the fewest units that, in fp32 (and,
   separately, in each ladder precision), reach the target; float units are then quantized back
   to int8 where the target holds (most fp32 time saved per unit of noise first: ``unit_time``),
   and each one still float tries the ladder precisions before staying fp32. int16 tensors use min/max ranges (65536 levels need no clipping) where no int8
   node shares them. Beside that answer, the knapsack's own (``knapsack.py``): units int8 in
   order of time saved per noise from none, as many as meet the target, then the rest taken
   back where it holds; a slow, noisy unit (an LSTM) that the ranked prefix keeps float can
   run int8 there, with cheaper units float instead. Timing decides between them.
4. Latency: float gaps between int8 regions are quantized back where fidelity allows (fewer
   precision changes); isolated int8 nodes are dropped; every configuration tried is timed on the
   provider at ``threads`` (interleaved medians; 1 where not given). The fastest one meeting the
   target wins; if it is not faster than fp32, the fp32 model is returned with that verdict. Where
   ``threads`` was not given, the answer that passed the final gate (``gate.py``) is timed at 2
   threads too and kept only where it is faster than fp32 over 1 and 2 threads together
   (``placement.two_threads``). So an int16 or fp16
   layer survives only in a configuration that measured faster than the alternatives (on the CPU
   provider int16 runs as a float kernel between Q/DQ: it rarely pays there; its value is
   fidelity on integer-only targets).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

from edgeq import cluster
from edgeq.auto.calib import METHODS, calibrate_once
from edgeq.auto.knapsack import by_time, promising
from edgeq.auto.latency import precision_changes
from edgeq.auto.state import SQNR_MARGIN_DB, Config, Ranking, Search
from edgeq.config import QuantConfig
from edgeq.errors import EdgeqError, UsageError
from edgeq.graph import all_nodes

__all__ = ["auto_quantize"]

logger = logging.getLogger(__name__)

REFINE_TENSORS = 4  # tensors whose range method is chosen one by one
MAX_REQUANTIZE = 64  # float units tried back in int8 after the binary search
MAX_LADDER = 16  # fp32 units then tried on the ladder (each rung is one more build)
PER_TOKEN = "int8-per-token"  # the rung for MatMul/Gemm units; other units take fp32 on it
LADDER_NAMES = {"int16": "int16 activations", "fp16": "fp16", PER_TOKEN: "int8 per-token dynamic"}
# whole-model fp16 also competes when int8 missed the target and the ladder ran (its per-layer
# fp16 keeps Q/DQ around the int8 layers, slower than fp32 on CUDA); off until measured
FP16_AFTER_FALLBACK = False


def ladder(provider: str, format: str = "qdq") -> tuple[str, ...]:
    """The precisions tried between int8 and fp32, first choice first: fp16 only where the
    provider has fp16 kernels (not onnxruntime's CPU provider: measured no faster than fp32);
    int8 per-token dynamic on the CPU provider with the QDQ format (MatMulIntegerToFloat: 2.7-3.3x
    fp32 on one MatMul, docs/per_token.md), where it is faster than fp32 and int16."""
    if provider == "cpu":
        return (PER_TOKEN, "int16") if format == "qdq" else ("int16",)
    return ("fp16", "int16")


def _disagreement(cal: Any, name: str) -> float:
    widths = [cal.range(name, m).hi - cal.range(name, m).lo for m in METHODS]
    return max(widths) / max(min(widths), 1e-12)


def _refine_methods(search: Search, model: Any, cal: Any, best: Config, roots: list[str]) -> Config:
    ranked = sorted((n for n in roots if n in cal), key=lambda n: -_disagreement(cal, n))
    ranked = [n for n in ranked if _disagreement(cal, n) > 1.2][:REFINE_TENSORS]
    from edgeq.auto.chains import Methods

    chain = Methods(ranked, METHODS, best.base)

    def build(pick: Any) -> dict[str, Any]:
        return dict(model=model, cal=cal, methods=chain.step(pick)[2], base=best.base, exclude=best.exclude)

    current, pick, last = best, chain.start(best.methods), -1
    while pick is not None and not (pick.t != last and search.over_budget("per-tensor range methods")):
        last = pick.t
        search.run_ahead(pick, chain.probe, chain.after, build)
        name, method, _ = chain.step(pick)
        trial = search.build(f"range {name}: {method}", **build(pick), record=False)
        kept = search.key(trial) > search.key(current) and trial.score.min_sqnr > current.score.min_sqnr + 0.05
        if kept:
            current = trial
        pick = chain.after(pick, kept)
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
    threads: int | None = None,
    eval_data: Any = None,
    config: QuantConfig | None = None,
    progress: bool = True,
    max_eval: int = 16,
    max_size: str | None = None,
) -> Any:
    """Quantize ``model`` choosing per-layer precision (see the module docstring).

    ``min_sqnr``: every float output's SQNR vs fp32 (dB) on the eval feeds must reach it.
    ``metric``: ``"module:function"`` or a callable ``(reference_outputs, outputs) -> score``
    (dicts of output name -> array stacked over the eval feeds), with ``min_score``.
    ``max_size``: "2.5" (MB), "8x" (times smaller than the model given) or "min" (the smallest
    file that keeps the promise): the answer's weights stored in fewer bits to fit, the promise
    checked again (``size_fit.py``).
    Returns an ``edgeq.QuantResult`` whose ``report["auto"]`` says what was tried and why.
    """
    from edgeq.auto.samples import affordable, draw, scoring_note
    from edgeq.auto.workbench import Workbench, model_bytes_of, prepare_float, reusable_source
    from edgeq.calibrate.collect import progress_bar
    from edgeq.io import as_model

    if min_score is not None and metric is None:
        raise UsageError("min_score needs a metric: pass metric='module:function' (or --metric)")
    if min_sqnr is None and min_score is None:
        raise UsageError("give a fidelity target: min_sqnr (dB) and/or metric with min_score")
    if threads is not None and threads < 1:
        raise UsageError(f"threads must be at least 1, got {threads}")
    asked, threads = threads, threads or 1  # None: timed at 1 thread, and at 2 before the answer leaves
    config = (config or QuantConfig()).replace(mode="static", min_sqnr=None)
    loaded, source_path = as_model(model)
    limit = _size_limit(max_size, loaded, source_path)
    from edgeq.modelinfo import refuse_quantized

    refuse_quantized(loaded, source_path)
    source = reusable_source(data, loaded)
    float_model, prepare_notes = prepare_float(loaded, config, source)
    from edgeq.auto.opset_lift import lifted

    raised, lift_note = lifted(loaded, float_model, config)
    if lift_note:  # opset_lift.py: per-token rows by one blocked QuantizeLinear
        try:
            float_model, prepare_notes = prepare_float(loaded, raised, source)
            config = raised
        except EdgeqError as e:  # (3) the converter could not raise it: the model's own opset
            lift_note = ""
            logger.info("auto: the model stays at its own opset (%s)", e)
    drawn = draw(eval_data, source, float_model, max_eval)
    source, feeds, note = drawn.calib, drawn.feeds, drawn.note
    feeds = feeds[:affordable(model_bytes_of(float_model), feeds, max_eval)]  # all drawn where scoring is cheap
    from edgeq.auto.top1 import default_guard

    metric, min_score, guard_note = default_guard(float_model, metric, min_score, config.min_top1, config.min_iou,
                                                  feeds[0] if feeds else None)
    bench = Workbench.create(float_model, config, feeds, metric)
    notes = [n for n in [note, scoring_note(drawn, len(feeds)), guard_note, lift_note] if n]
    if min_sqnr is not None:
        notes.append(f"the search aims at {min_sqnr + SQNR_MARGIN_DB:g} dB: {SQNR_MARGIN_DB:g} dB of headroom over the "
                     f"{min_sqnr:g} dB target, estimated on {len(feeds)} samples, for data it has not seen")
    rungs = ladder(provider, config.format)
    notes.append(f"precisions per layer: int8, {', '.join(LADDER_NAMES[r] for r in rungs)}, fp32"
                 + ("; fp16 is not tried on the CPU provider (onnxruntime has no fp16 Conv/MatMul/Gemm CPU "
                    "kernels: it casts them back to fp32, so fp16 cannot be faster there)" if provider == "cpu" else ""))
    with progress_bar(progress) as bar:
        search = Search(bench, source, min_sqnr, min_score, bar, config.time_budget_s)
        cal = calibrate_once(float_model, source, config, progress=False)
        uniform = [search.build(f"int8 uniform {METHODS[0]}", float_model, cal, {}, METHODS[0])]
        from edgeq.auto.weight_width import eight_bit_weights

        eight, width_note = eight_bit_weights(search, float_model, cal, uniform[0])
        if width_note:
            notes.append(width_note)
        if eight is not None:  # 8-bit weights from here on (bench.config), in place of the 7-bit build
            uniform, config = [eight], search.bench.config
        if precision_changes(uniform[0].result.model):  # no activation quantized statically: ranges change nothing
            uniform += [search.build(f"int8 uniform {m}", float_model, cal, {}, m) for m in METHODS[1:]]
        best = max(uniform, key=search.key)
        search.cal = cal
        # timed on the largest scoring feed: with dynamic shapes (sequence length, image size) the
        # small ones favour fp32 (int8's fixed Q/DQ cost), and a deployment's work is the large ones
        largest = max(feeds, key=lambda feed: sum(getattr(v, "size", 1) for v in feed.values()))
        from edgeq.auto.ceiling import int8_ceiling

        early = int8_ceiling(search, uniform, float_model, loaded, provider, threads, largest, PER_TOKEN in rungs)
        repairs: list[dict] = []
        fallback: dict[str, dict[str, Any]] = {}
        dropped: dict[str, str] = {}
        if early is not None:
            chosen, verdict = early
            notes.append("the search for fidelity was skipped: int8 everywhere was not faster than fp32 here "
                         "(the verdict gives the timings)")
        else:
            chosen, verdict, dropped, repairs, fallback, cal = _search(search, best, cal, float_model, loaded, config,
                                                                       rungs, provider, threads, largest)
        from edgeq.auto.gate import final_gate

        chosen, verdict, gate = final_gate(search, chosen, verdict, drawn, float_model, _again_for(search))
        if asked is None:
            from edgeq.auto.placement import two_threads

            chosen, verdict = two_threads(search, chosen, verdict, gate, float_model, provider, largest)
        if limit is not None:
            from edgeq.auto.size_fit import fit_size

            chosen, verdict, size_record = fit_size(search, chosen, verdict, drawn, float_model, limit, max_size,
                                                    provider, threads, largest)
        dropped = {k: v for k, v in dropped.items() if k in chosen.exclude and not verdict.startswith("fp32")}
        if search.ahead is not None:
            search.ahead.close()
    if search.cut:
        notes.append(f"time budget ({config.time_budget_s:.0f} s) spent: cut short: {'; '.join(search.cut)}")
    from edgeq.auto.diagnose import diagnose
    from edgeq.auto.summary import auto_section

    data_section, data_notes = diagnose(search, chosen, source, drawn.unseen)
    notes += data_notes
    from edgeq.stages.check import check

    result = chosen.result
    check(result.model)  # the variants skip the checker (build_variant); the answer gets it
    if limit is not None and size_record.get("stored") == "codebooks":  # size_fit.py: the weights as stored now
        _stored_sizes(result.report.setdefault("summary", {}), result.model)
    result.report["prepare"] = list(prepare_notes)  # the variants skipped prepare: what it did, once
    _own_reasons(result.report, config)
    result.source = source_path
    result.report["auto"] = auto_section(search, chosen, verdict, repairs, fallback, dropped, notes,
                                         min_sqnr=min_sqnr, min_score=min_score, provider=provider, threads=threads)
    result.report["auto"]["gate"] = gate
    if limit is not None:
        result.report["auto"]["size"] = size_record
    result.report["auto"]["data"] = data_section
    result.report["config"]["mode"] = "auto"
    return result


def _stored_sizes(summary: dict[str, Any], model: Any) -> None:
    """The report summary's weight bytes after a size target stored them in fewer bits."""
    from edgeq.io import weights_nbytes

    after = weights_nbytes(model)
    summary["size_after_bytes"] = after
    before = summary.get("size_before_bytes")
    summary["size_ratio"] = (after / before) if before else None


def _size_limit(max_size: str | None, loaded: Any, source_path: str | None) -> float | None:
    """``max_size`` in bytes ("8x": the model's file over 8; a model given in memory, serialized)."""
    if max_size is None:
        return None
    from edgeq.config import parse_size_target
    from edgeq.io import given_bytes

    kind, amount = parse_size_target(max_size)
    if kind == "min":  # the smallest file that keeps the promise (size_fit.py)
        return 0.0
    if kind == "mb":
        return amount * 1e6
    return given_bytes(loaded, source_path) / amount


def _search(search: Search, best: Config, cal: Any, float_model: Any, loaded: Any, config: QuantConfig,
            rungs: tuple[str, ...], provider: str, threads: int, largest: dict) -> tuple:
    """Steps 1-4 after the uniform build: (chosen, verdict, dropped, repairs, fallback, cal)."""
    bench = search.bench
    search.timing = (largest, provider, threads)
    best = _refine_methods(search, float_model, cal, best, _roots(bench, ()))
    repairs, best, cal = _repair(search, best, cal, config)
    bench.model = best.model
    fallback: dict[str, dict[str, Any]] = {}
    if not search.meets(best) and PER_TOKEN in rungs:
        best = _per_token_dynamic(search, best, cal, repairs)
        best, cal = _smooth_per_token(search, best, cal, repairs, config)
        bench.model = best.model
        from edgeq.auto.fronts import per_tensor_fronts
        from edgeq.config import PerToken

        if isinstance(bench.config.dynamic_granularity, PerToken) and search.meets(best):
            # per token kept and the target met: GPTQ's rounding is headroom for (2) fronts back per tensor
            best = _gptq(search, best, cal, repairs)
            bench.model = best.model
            per_tensor_fronts(search, best, cal)  # recorded: timing decides (4)
    if not search.meets(best):
        best = _gptq(search, best, cal, repairs)
        bench.model = best.model
    search.before_fallback = (best, cal, rungs)
    if not search.meets(best):
        best, fallback = _fallback(search, best, cal, rungs)
    if "fp16" in rungs and (FP16_AFTER_FALLBACK or not fallback):  # else the ladder never tries fp16
        _whole_fp16(search, float_model, best, config)
    from edgeq.auto.placement import place

    chosen, verdict, dropped = place(search, best, cal, float_model, provider, threads, largest, original=loaded)
    return chosen, verdict, dropped, repairs, fallback, cal


def _again_for(search: Search) -> Any:
    """The gate's second search (``retarget.py``) bound to this search: the fallback again, from
    its ranking where it ran (else the whole fallback, from where it would have started)."""
    from edgeq.auto.retarget import paying_prefixes, retarget

    def again() -> None:
        ranking = search.ranking
        if ranking is not None:
            _from_ranking(search, ranking.best, ranking.cal, ranking.ranked, ranking.noise, ranking.rungs,
                          prefixes=paying_prefixes(search, ranking.rungs))
        elif search.before_fallback is not None:
            _fallback(search, *search.before_fallback)

    return lambda gap, target, fp32: retarget(search, gap, target, fp32, again)


def _own_reasons(report: dict[str, Any], config: QuantConfig) -> None:
    """The variants are built with auto's per-layer precision in the config, so the selector
    says "excluded by the user" / "as asked" for layers auto chose: say who chose them."""
    user = dict(config.precision)
    for entry in report.get("float", []):
        asked = user.get(entry.get("node")) or user.get(entry.get("op"))
        reason = entry.get("reason", "")
        if asked is None and reason.startswith("excluded by the user"):
            entry["reason"] = "kept fp32 by auto mode (the auto section says why, layer by layer)"
        elif asked is None and reason.startswith("computed in fp16 as asked"):
            entry["reason"] = "computed in fp16 by auto mode (the auto section says why, layer by layer)"


def _repair(search: Search, best: Config, cal: Any, config: QuantConfig) -> tuple[list[dict], Config, Any]:
    """Equalization and SmoothQuant change the float graph exactly (ranges re-collected);
    bias correction is tried last and stays a property of the configuration, applied at each
    build to the nodes that are int8 there."""
    from edgeq.auto.repairs import REPAIRS, correct_bias

    records = []
    for name, repair in REPAIRS:
        if search.over_budget("repairs"):
            return records, best, cal
        model, detail = repair(best.model, cal, config)
        if model is not None:  # re-prepared: the variants built from it skip prepare (names, shapes)
            from edgeq.auto.workbench import prepare_float

            model, _ = prepare_float(model, config, search.source)
        record: dict[str, Any] = {"repair": name, "kept": False, "detail": detail, "before_db": _db(best.score.min_sqnr)}
        if model is not None:
            if name == "SmoothQuant":  # (equalization is exact in float: nothing fitted)
                search.fitted[id(model)] = name
            new_cal = calibrate_once(model, search.source, config, progress=False)
            trial = search.build(f"int8 + {name}", model, new_cal, best.methods, best.base, best.exclude)
            record["after_db"] = _db(trial.score.min_sqnr)
            if search.key(trial) > search.key(best) and trial.score.min_sqnr > best.score.min_sqnr + 0.05:
                record["kept"] = True
                best, cal = trial, new_cal
        records.append(record)
    if search.over_budget("repairs"):
        return records, best, cal
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


def _per_token_dynamic(search: Search, best: Config, cal: Any, repairs: list[dict]) -> Config:
    """(2) The dynamic MatMul/Gemm (select.py (5)) with per-token scales instead of per-tensor;
    kept, for every later build too, only if the fidelity rises."""
    from edgeq.config import PerToken
    from edgeq.passes.plan import Role

    bench, before = search.bench, search.bench.config
    plan, copy = bench.plan(best.exclude)
    dynamic = [n for n in all_nodes(copy.graph) if plan.role(n) == Role.DYNAMIC and n.op_type in ("MatMul", "Gemm")]
    if not dynamic or isinstance(before.dynamic_granularity, PerToken) or search.over_budget("repairs"):
        return best
    bench.config = before.replace(dynamic_granularity=PerToken())
    trial = search.build("int8, per-token dynamic MatMuls", best.model, cal, best.methods, best.base, best.exclude,
                         bias=best.bias)
    trial, rows = _token_rows(search, trial, best, cal)
    kept = search.key(trial) > search.key(best) and trial.score.min_sqnr > best.score.min_sqnr + 0.05
    repairs.append({"repair": "per-token dynamic MatMuls", "kept": kept, "before_db": _db(best.score.min_sqnr),
                    "after_db": _db(trial.score.min_sqnr),
                    "detail": f"{len(dynamic)} MatMul/Gemm between float ops: one activation scale per row at run "
                              f"time instead of one per tensor (passes/per_token.py){rows}"})
    if not kept:
        bench.config = before
        return best
    return trial


def _token_rows(search: Search, trial: Config, best: Config, cal: Any) -> tuple[Config, str]:
    """(2) Where this CPU saturates 8-bit products (per-token weights would keep 7 bits, or 8 with
    their pairs within 128) and ``token_rows`` was left to edgeq: the same build with narrow rows
    (181 levels, 8-bit weights with pairs within 181, passes/per_token.py (2)) too, the better kept
    for every later build (the other leaves the tried configurations: the gate refits with the
    workbench's config). Which wins can depend on the model: every MatMul per token, unseen data,
    a CPU without VNNI, full rows with pairs within 128 against narrow: MiniLM 30.7 and 30.3 dB,
    tiny_transformer 39.4 and 39.4 (full rows with 7-bit weights: 26.4 and 37.6). Returns (the
    build, a note for the repair's detail)."""
    from edgeq.passes.per_token import row_form

    config = search.bench.config
    if config.token_rows is not None or row_form(config.replace(token_rows="narrow"))[1] is None \
            or search.over_budget("repairs"):
        return trial, ""
    search.bench.config = config.replace(token_rows="narrow")
    try:
        narrow = search.build("int8, per-token dynamic MatMuls, narrow rows", best.model, cal, best.methods, best.base,
                              best.exclude, record=False, bias=best.bias)
    except Exception as e:  # full rows never saturate: a failed build keeps them
        logger.info("auto: narrow per-token rows not built (%s): full rows kept", e)
        search.bench.config = config.replace(token_rows="full")
        return trial, ""
    note = (f"; rows narrowed to 181 levels with 8-bit weights: {_db(narrow.score.min_sqnr)} dB against "
            f"{_db(trial.score.min_sqnr)} dB with full rows")
    if search.key(narrow) > search.key(trial):
        search.tried[:] = [c for c in search.tried if c is not trial]
        search.tried.append(narrow)
        return narrow, note + " (narrow kept)"
    search.bench.config = config.replace(token_rows="full")
    return trial, note + " (full kept)"


SMOOTH_ALPHAS = (0.5, 0.6)  # SmoothQuant migration strengths tried with per-token MatMuls


def _smooth_per_token(search: Search, best: Config, cal: Any, repairs: list[dict], config: QuantConfig) -> tuple[Config, Any]:
    """(2) With per-token MatMuls kept and the target still missed: SmoothQuant on their inputs
    (``repairs.smooth_per_token``), each of ``SMOOTH_ALPHAS`` built and scored on the scoring
    samples, in order, until one does not raise the fidelity; the best is kept only if it rose.
    One scale per row handles outlier tokens; outlier channels are what is left, and moving them
    into the per-column weights is what SmoothQuant does (MiniLM, all MatMuls per-token: 22.9 ->
    27.3 dB, bench/per_token.py)."""
    from edgeq.auto.repairs import smooth_per_token
    from edgeq.auto.workbench import prepare_float
    from edgeq.config import PerToken

    if (search.meets(best) or not isinstance(search.bench.config.dynamic_granularity, PerToken)
            or search.over_budget("repairs")):
        return best, cal
    current, current_cal, details = best, cal, []
    for alpha in SMOOTH_ALPHAS:
        if search.over_budget("repairs"):
            break
        model, detail = smooth_per_token(best.model, cal, config, alpha)
        if model is None:
            details.append(detail)
            break
        model, _ = prepare_float(model, config, search.source)
        search.fitted[id(model)] = "SmoothQuant"
        new_cal = calibrate_once(model, search.source, config, progress=False)
        trial = search.build(f"int8, per-token + SmoothQuant (alpha {alpha:g})", model, new_cal, best.methods,
                             best.base, best.exclude, bias=best.bias)
        details.append(f"{detail}: {trial.score.min_sqnr:.1f} dB")
        if not (search.key(trial) > search.key(current) and trial.score.min_sqnr > current.score.min_sqnr + 0.05):
            break  # a stronger migration than one that did not help: not tried (MiniLM: 26.9 -> 25.7, 24.7 dB)
        current, current_cal = trial, new_cal
    repairs.append({"repair": "SmoothQuant for per-token MatMuls", "kept": current is not best,
                    "before_db": _db(best.score.min_sqnr), "after_db": _db(current.score.min_sqnr),
                    "detail": "; ".join(details)})
    return current, current_cal


def _gptq(search: Search, best: Config, cal: Any, repairs: list[dict]) -> Config:
    """(2) Target still missed: the int8 MatMul/Gemm weights rounded by GPTQ (``passes/gptq.py``)
    against their inputs' Hessians from the range-calibration samples, in every later build
    (``passes.weights.gptq_rounding``: only weights that get quantized; a float layer keeps its
    float weights); kept only if the fidelity rises (the configurations built before still compete)."""
    from edgeq.calibrate.grams import gram_matrices
    from edgeq.graph import const_array, copy_model
    from edgeq.passes.weights import weight_key

    if search.over_budget("repairs"):
        return best
    names = sorted({n.inputs[0].name for n in best.model.graph if n.op_type in ("MatMul", "Gemm")
                    and len(n.inputs) > 1 and n.inputs[0] is not None and n.inputs[0].name
                    and const_array(n.inputs[1]) is not None and const_array(n.inputs[1]).ndim == 2})
    if not names:
        return best
    model = copy_model(best.model)  # the same weights; a model of its own marks "GPTQ rounding"
    grams = gram_matrices(model, search.source, names)
    hessians = {}
    for node in model.graph:
        if node.op_type in ("MatMul", "Gemm") and len(node.inputs) > 1 and node.inputs[0] is not None:
            w = const_array(node.inputs[1])
            if w is not None and w.ndim == 2 and node.inputs[0].name in grams and not w.flags.writeable:
                hessians[weight_key(w)] = grams[node.inputs[0].name]
    search.gptq[id(model)] = (model, hessians)
    search.fitted[id(model)] = " and ".join(filter(None, (search.fitted.get(id(best.model)), "GPTQ")))
    trial = search.build("int8 + GPTQ weight rounding", model, cal, best.methods, best.base, best.exclude,
                         bias=best.bias)
    kept = search.key(trial) > search.key(best) and trial.score.min_sqnr > best.score.min_sqnr + 0.05
    repairs.append({"repair": "GPTQ weight rounding", "kept": kept, "before_db": _db(best.score.min_sqnr),
                    "after_db": _db(trial.score.min_sqnr),
                    "detail": f"{len(names)} MatMul/Gemm input(s): weights rounded against X^T X (damping 0.3)"})
    if not kept:
        del search.gptq[id(model)]
        return best
    return trial


def _noise(sqnr_db: float) -> float:
    return 10.0 ** (-sqnr_db / 10.0) if math.isfinite(sqnr_db) else 0.0


def _fallback(search: Search, best: Config, cal: Any, rungs: tuple[str, ...] = ()) -> tuple[Config, dict[str, dict[str, Any]]]:
    """Rank units by the output noise each adds alone (SQNR with only it int8; for a light op,
    which cannot be int8 alone, the noise removed by keeping it float), then find the smallest
    ranked prefix that meets the target in fp32 (binary search: noise adds up, so it is
    monotone) and, recorded beside it, in each ladder precision; then re-quantize and ladder."""
    from edgeq.passes.plan import Role

    units = [u.name for u in search.bench.units() if u.name not in best.exclude]
    noise, only_db = {}, {}
    full = _noise(best.score.min_sqnr)
    # a dynamic MatMul/Gemm (float neighbours) stays dynamic with more of its neighbours float:
    # int8 alone without a plan of its own (MiniLM: 36 plans, 2.5 s)
    plan, copy = search.bench.plan(best.exclude)
    dynamic = {n.name for n in all_nodes(copy.graph) if plan.role(n) == Role.DYNAMIC}
    if units and all(n in dynamic for n in units):
        # int16 activations on a dynamic MatMul/Gemm: a Q/DQ pair before the same float product (no
        # provider has int16 kernels), slower and less exact than keeping it float (MiniLM: 5 builds)
        rungs = tuple(r for r in rungs if r != "int16")
    executor = cluster.current()
    from edgeq.auto.ahead import ranks_on

    if ranks_on(executor, search.bench.width) and search.gptq.get(id(best.model)) is None:
        _rank_on_cluster(search, executor, best, cal, units, dynamic, noise, only_db, full)
    else:  # each variant scored while the next is built (``Search.build_each``)
        alone_of: dict[str, bool] = {}

        def trials() -> Iterator[tuple[str, tuple[str, ...]]]:
            for name in units:
                alone_of[name], exclude = search.bench.ranking_trial(best.exclude, units, name, name in dynamic)
                yield f"{'only' if alone_of[name] else 'all but'} {name}", exclude

        step = "per-layer sensitivity ranking (unmeasured layers ranked last)"
        built = search.build_each(trials(), best.model, cal, best.methods, best.base, bias=best.bias, step=step)
        for name, trial in zip(units, built):
            _ranked(name, alone_of[name], trial.score, full, noise, only_db)
        noise.update({n: -1.0 for n in units if n not in noise})  # (the budget ran out before them)
    ranked = sorted(units, key=lambda n: -noise[n])
    search.ranking = Ranking(best, cal, ranked, noise, rungs)  # the gate's retarget reuses it (retarget.py)
    return _from_ranking(search, best, cal, ranked, noise, rungs, only_db)


def _ranked(name: str, alone: bool, score: Any, full: float, noise: dict[str, float], only_db: dict[str, float]) -> None:
    """The noise ``name`` adds, read from its ranking trial's score."""
    if alone:
        only_db[name] = score.min_sqnr
        noise[name] = _noise(score.min_sqnr)
    else:
        noise[name] = max(full - _noise(score.min_sqnr), 0.0)


def _rank_on_cluster(search: Search, executor: Any, best: Config, cal: Any, units: list[str], dynamic: set[str],
                     noise: dict[str, float], only_db: dict[str, float], full: float) -> None:
    """``_fallback``'s per-unit loop with every variant submitted to ``executor``'s workers at
    once (``remote.rank_variant``: each worker also works out which trial its unit takes, and
    corrects biases where ``best`` does), read in order, the budget checked between them: the same
    variants, the same scores, so the same ranking."""
    from edgeq.auto.ahead import Ahead
    from edgeq.auto.remote import RankTrial, rank_variant

    table = cal.table_for(best.methods, best.base)
    ahead = search.ahead or Ahead(search, executor)
    job, means = ahead.job(best.model), ahead.means(cal) if best.bias else None
    search.bar.update(search.task, description=f"auto: per-layer ranking ({executor.width} workers)")
    pending = [executor.submit(rank_variant, RankTrial(table, name, tuple(units), best.exclude, name in dynamic, means),
                               shared=job, label="auto ranking variant") for name in units]
    try:
        for name, task in zip(units, pending):
            if search.over_budget("per-layer sensitivity ranking (unmeasured layers ranked last)"):
                noise.update({n: -1.0 for n in units if n not in noise})
                return
            alone, score = task.result()
            search.bar.advance(search.task)
            _ranked(name, alone, score, full, noise, only_db)
    finally:
        for task in pending:
            task.cancel()


def _from_ranking(search: Search, best: Config, cal: Any, ranked: list[str], noise: dict[str, float],
                  rungs: tuple[str, ...], only_db: dict[str, float] | None = None,
                  prefixes: tuple[str, ...] | None = None) -> tuple[Config, dict[str, dict[str, Any]]]:
    """The rest of ``_fallback`` once units are ranked: the ladder precisions (``prefixes`` of
    them; default all) and fp32 for the smallest ranked prefix that meets the target, then float
    units back to int8 and up the ladder, most fp32 time saved per unit of noise first
    (``unit_time.py``); and the knapsack's answer beside it (``knapsack.py``)."""
    only_db = only_db or {}
    for rung in rungs if prefixes is None else prefixes:  # the ladder precisions for the ranked prefix, before fp32
        if search.over_budget("precision ladder"):
            break
        if rung != PER_TOKEN or search.matmul_units():  # (nothing for it to change where all are per-token)
            _prefix(search, best, cal, ranked, rung)
    found = _prefix(search, best, cal, ranked, "fp32")
    if found is None:
        return best, {}
    tried: dict[str, dict[str, Any]] = {}
    found = _requantize(search, found, cal, _back_order(search, ranked, noise, found.exclude), tried)
    _ladder(search, found, cal, order=_back_order(search, ranked, noise, found.exclude), rungs=rungs, tried=tried)
    order = _back_order(search, ranked, noise, tuple(ranked))
    if promising(search, found, order, noise):  # the knapsack's answer beside it: timing decides (knapsack.py)
        by_time(search, best, cal, order, _requantize)
    why = {name: {"rank": i + 1, "of": len(ranked), "only_int8_sqnr_db": _db(only_db[name]) if name in only_db else None,
                  "tried_db": tried.get(name, {})}
           for i, name in enumerate(ranked)}
    return found, why


def _back_order(search: Search, ranked: list[str], noise: dict[str, float], exclude: tuple[str, ...]) -> list[str]:
    """The float units of ``exclude`` in the order they are tried back in int8 (and up the
    ladder): most fp32 time per unit of noise first (``unit_time.py``: the knapsack's greedy
    order); units that added no measured noise first (they cost the target nothing), most time
    first; without times, least sensitive first. Ties (no time measured) keep that order."""
    least_first = [n for n in reversed(ranked) if n in exclude]
    ms = search.unit_ms()
    if not ms:
        return least_first

    def key(name: str) -> tuple[bool, float]:
        added, saved = noise.get(name, 0.0), ms.get(name, 0.0)
        return (added > 0, -saved / added if added > 0 else -saved)

    return sorted(least_first, key=key)


def _prefix(search: Search, best: Config, cal: Any, ranked: list[str], rung: str) -> Config | None:
    """The smallest prefix of ``ranked`` that, in ``rung`` ("fp32", "int16" or "fp16"), meets
    the target (binary search); None when even the whole list does not."""
    matmuls = search.matmul_units() if rung == PER_TOKEN else frozenset()

    def build(k: int) -> dict[str, Any]:
        chosen = tuple(ranked[:k])
        if rung == "fp32":
            return dict(model=best.model, cal=cal, methods=best.methods, base=best.base,
                        exclude=best.exclude + chosen, bias=best.bias)
        # per-token: its MatMul/Gemm units per-token, the other units fp32
        return dict(model=best.model, cal=cal, methods=best.methods, base=best.base,
                    exclude=best.exclude + (tuple(n for n in chosen if n not in matmuls) if matmuls else ()),
                    bias=best.bias, int16=chosen if rung == "int16" else (), fp16=chosen if rung == "fp16" else (),
                    per_token=tuple(n for n in chosen if n in matmuls))

    from edgeq.auto.chains import smallest

    state, found = smallest(1, len(ranked)), None
    while state is not None:
        search.run_ahead(state, smallest.probe, smallest.after, lambda s: {**build(smallest.probe(s)), "record": True},
                         (lambda s: search.likely(build(smallest.probe(s))["exclude"], best)) if rung == "fp32" else None)
        k = smallest.probe(state)
        label = f"int8, {k} most sensitive float" if rung == "fp32" else f"int8, {k} most sensitive in {LADDER_NAMES[rung]}"
        trial = search.build(label, **build(k))
        trial.prefix = rung
        met = search.meets(trial)
        if met:
            found = trial
        state = smallest.after(state, met)
    return found


def _requantize(search: Search, found: Config, cal: Any, order: list[str],
                tried: dict[str, dict[str, Any]] | None = None) -> Config:
    """Quantize float units back while the target holds: first those in gaps between int8
    regions (fewer precision changes), then the rest, in ``order`` (``_back_order``: most fp32
    time saved per unit of noise first). The ranking is an estimate (noise does not add exactly);
    this pass corrects it with measurements.

    Units go back in runs (``chains.TakeBack``): from one unit on, the longest run that goes back
    to int8 together and meets the target (lengths 1, 2, 4 ... until one misses, then a binary
    search between the last that met and the first that missed), taken back, and the unit after it
    left float. The unit left float was built on top of the run (the miss one longer than it), so
    it is measured as a one-at-a-time loop measures it; where noise adds up (more int8 units never
    less noise), the answer is that loop's, in about 2 log2(run) builds per run instead of one per
    unit (MiniLM's knapsack: 21 of 27 back). On a cluster the next steps run ahead (``ahead.py``)."""
    from edgeq.auto.chains import TakeBack
    from edgeq.auto.latency import gaps

    plan, copy = search.bench.plan(found.exclude)
    in_gaps = gaps(plan, copy.graph, order)
    names = [*in_gaps, *(n for n in order if n not in in_gaps)][:MAX_REQUANTIZE]
    chain = TakeBack(names)

    def build(run: Any) -> dict[str, Any]:
        return dict(model=found.model, cal=cal, methods=found.methods, base=found.base, exclude=chain.probe(run),
                    bias=found.bias)

    current, missed, run = found, None, chain.start(found.exclude)
    while run is not None and not search.over_budget("re-quantizing float layers"):
        search.run_ahead(run, chain.probe, chain.after, build, lambda r: search.likely(chain.probe(r), found))
        length = chain.length(run)
        label = f"re-quantize {names[run.i + length - 1]}" + (f" ({length} back at once)" if length > 1 else "")
        trial = search.build(label, **build(run), record=False)
        met = search.meets(trial)
        if met:
            current = trial
        else:
            missed = trial
        after = chain.after(run, met)
        settled = after is None or after.i != run.i
        if settled and not (met and run.missed_at is None) and tried is not None:  # the unit left float: the run plus it
            tried.setdefault(names[run.i + (length if met else run.met_at)], {})["int8"] = _db(missed.score.min_sqnr)
        run = after
    return _requantized(search, found, current)


def _requantized(search: Search, found: Config, current: Config) -> Config:
    if current is not found:
        current.name = f"int8, {len(current.exclude)} float (gaps merged, {'re-quantized by time saved per noise' if search.unit_ms() else 'least sensitive re-quantized'})"
        search.tried.append(current)
    return current


def _ladder(search: Search, found: Config, cal: Any, *, order: list[str], rungs: tuple[str, ...],
            tried: dict[str, dict[str, Any]]) -> Config:
    """From ``found`` (meets the target), give each fp32 unit the first ladder precision that
    keeps the target, in ``order`` (``_back_order``); recorded as one more configuration beside
    ``found``, so that timing decides between them."""
    from edgeq.auto.chains import Ladder

    current, matmuls = found, search.matmul_units() if PER_TOKEN in rungs else frozenset()
    names = [n for n in order if n in found.exclude][:MAX_LADDER]
    chain = Ladder(names, {n: [r for r in rungs if r != PER_TOKEN or n in matmuls] for n in names})

    def build(rung: Any) -> dict[str, Any]:
        return dict(model=found.model, cal=cal, methods=found.methods, base=found.base, bias=found.bias,
                    **chain.step(rung)[2])

    step = chain.start(found.exclude, found.int16, found.fp16, found.per_token)
    while step is not None and not (step.r == 0 and search.over_budget("precision ladder")):  # (checked per unit)
        search.run_ahead(step, chain.probe, chain.after, build)
        name, rung, _ = chain.step(step)
        trial = search.build(f"{LADDER_NAMES[rung]} {name}", **build(step), record=False)
        tried.setdefault(name, {})[rung] = _db(trial.score.min_sqnr)
        met = search.meets(trial)
        if met:
            tried[name].setdefault("meets", []).append(rung)
            current = trial
        step = chain.after(step, met)
    same = [c for c in search.tried if c.layout == current.layout]
    if current is not found and not same:  # (the binary search may have built it already)
        parts = [f"{len(current.per_token)} int8 per-token" if current.per_token else "",
                 f"{len(current.int16)} int16 activations" if current.int16 else "",
                 f"{len(current.fp16)} fp16" if current.fp16 else "",
                 f"{len(current.exclude)} fp32" if current.exclude else ""]
        current.name = "int8, " + ", ".join(p for p in parts if p) + " (precision ladder)"
        search.tried.append(current)
    return current


def _whole_fp16(search: Search, float_model: Any, best: Config, config: QuantConfig) -> Config:
    """Every node in fp16 (``mode="fp16"``: fp32 at the graph boundary), one more configuration.
    On a provider with fp16 kernels (CUDA) int8 QDQ runs as DequantizeLinear -> float kernel ->
    QuantizeLinear, slower than fp32, so the fastest pick there is often fp16 everywhere; the
    ladder alone never builds it when int8 already meets the target (no fallback then)."""
    from edgeq.auto.workbench import model_bytes_of
    from edgeq.stages.fp16 import build_fp16_variant
    from edgeq.stages.load import Prepared

    search.bar.update(search.task, description="auto: fp16 (whole model)")
    result = build_fp16_variant(Prepared.of(float_model), config.replace(mode="fp16", format="qdq"))
    data = model_bytes_of(result.model)
    units = tuple(u.name for u in search.bench.units())
    c = Config("fp16 (whole model)", (), search.bench.score(data), result, float_model, dict(best.methods),
               best.base, data=data, fp16=units)
    logger.info("auto: fp16 (whole model) -> min SQNR %.2f dB", c.score.min_sqnr)
    search.tried.append(c)
    return c


def _db(value: float) -> Any:
    return round(value, 3) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
