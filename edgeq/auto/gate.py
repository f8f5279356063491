"""The final gate: the answer checked on every evaluation sample before auto returns it.

    chosen, verdict, record = final_gate(search, chosen, verdict, drawn, float_model)

The search scores configurations on a stratified subset of the samples (``samples.draw``).
Before the answer leaves, it runs on every evaluation sample given against the fp32 model, or,
without them, on every calibration sample, each judged out of sample (cross-fitted: the quarter
held out of range calibration by the answer itself, each other quarter by the same configuration
built on ranges calibrated without it; ``samples.py`` (2)), streamed (memory does not grow with
the samples):

1. It passes when every float output's bootstrap lower bound (one-sided 95%) over all those
   samples reaches the user's target (the search aimed ``SQNR_MARGIN_DB`` above it), and the
   metric, computed over all of them, its score.
2. If it misses on the SQNR bound alone, the search runs again, aiming as far above the target as
   the pick fell from its scoring samples to its gate bound (``retarget.py``), and what it builds
   is timed; again (at most ``MAX_SEARCHES`` in all) when a configuration checked later fell
   further (by ``MIN_GAP_GROWTH``). Then the configurations that met the target on the scoring
   samples and beat fp32 by ``MIN_WIN`` are checked the same way (at most ``MAX_ALTERNATIVES``):
   first those whose scoring SQNR is high enough to absorb the largest fall from scoring samples
   to gate seen so far (a configuration with more layers out of int8), fastest first; then the
   rest.
3. If none passes, the fp32 model is returned, with a verdict saying what missed and by how much.
4. A configuration whose float weights were fitted to the range-calibration samples (SmoothQuant
   factors, GPTQ rounding: ``Search.fitted``) is in sample there whatever ranges judge it: its
   bound is the lower of the bound over all samples (the rare hard ones) and the bound over the
   held-out quarter alone (out of sample for the fit too). MiniLM (GPTQ on SmoothQuant) promised
   32.3 dB over all 32 samples and delivered 31.3 on 96 unseen ones.

The fp32 answer is exact and is not run. ``record`` (``report["auto"]["gate"]``) says what was
checked on how many samples: per output the aggregate SQNR, its bound, the worst sample and the
5th percentile of the per-sample SQNRs, every configuration that failed, and what the
searches again built (``searched_again``).
"""

from __future__ import annotations

import logging
import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgeq.auto.workbench import Score

__all__ = ["final_gate", "gate_figure", "check_on", "check_cross_fitted", "gate_dict", "noise_half_in",
           "few_carriers_note", "MAX_ALTERNATIVES"]

logger = logging.getLogger(__name__)

MAX_ALTERNATIVES = 4  # configurations checked after the first pick
MAX_SEARCHES = 2  # searches again (2), each aiming above a larger gap than the last
MIN_GAP_GROWTH = 0.25  # dB: a gap this much larger than the last one aimed at is worth a search again


def _db(value: float) -> Any:
    return round(value, 3) if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def _score(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def gate_dict(checked: Score) -> dict[str, Any]:
    """The report's record of one model over every gate sample: the aggregate, its bound, the
    worst sample and the 5th percentile, over all float outputs and per output."""
    def low(per: dict[str, float] | None) -> float:
        return min((per or {}).values(), default=math.inf)

    carried = checked.carried or {}
    out: dict[str, Any] = {
        "samples": checked.samples, "min_sqnr_db": _db(checked.min_sqnr), "bound_db": _db(low(checked.low)),
        "worst_sample_db": _db(low(checked.worst)), "p5_sample_db": _db(low(checked.p5)),
        "noise_half_in": noise_half_in(checked),
        "outputs": {n: {"sqnr_db": _db(checked.sqnr[n]), "bound_db": _db(checked.low[n]),
                        "worst_sample_db": _db(checked.worst[n]), "p5_sample_db": _db(checked.p5[n]),
                        "noise_half_in": carried.get(n)}
                    for n in checked.sqnr}}
    if checked.metric is not None:
        out["metric"] = checked.metric
    return out


def noise_half_in(checked: Score) -> int | None:
    """``samples.py`` (5): of the output with the lowest bound, the fewest samples holding half its noise."""
    if not checked.carried or not checked.low:
        return None
    name = min(checked.low, key=lambda n: checked.low[n])
    return checked.carried.get(name)


def few_carriers_note(checked: Score) -> str:
    """``samples.py`` (5): the verdict's caution where the bound of any output rests on a handful
    of samples (of those, the output with the lowest bound; named where there are several), else ""."""
    from edgeq.auto.samples import FEW_CARRIERS, MIN_HOLDOUT_SOURCE

    carried = {name: k for name, k in (checked.carried or {}).items() if k}
    few = {name: k for name, k in carried.items() if k <= FEW_CARRIERS}
    if not few or (checked.samples or 0) < 2 * MIN_HOLDOUT_SOURCE:
        return ""
    name = min(few, key=lambda n: (checked.low or checked.sqnr).get(n, math.inf))
    k, which = few[name], f"the noise of its output {name}" if len(carried) > 1 else "its output noise"
    return (f"; half of {which} comes from {k} of the {checked.samples} samples: the bound rests on "
            f"{'it' if k == 1 else 'them'} (inputs like {'it' if k == 1 else 'those'} may be more common in use: "
            "more calibration samples, or --eval data, would firm it up)")


class _Tally:
    """Per-sample signal/noise energies of each output over one or more runs (and the outputs,
    when a metric needs them): memory holds two numbers a sample, not the outputs."""

    def __init__(self, metric: Any = None, sessions: dict | None = None) -> None:
        self.metric = metric
        self.sessions = sessions  # where given: the fp32 session kept there, for the next tally of the same fp32
        self.signal: dict[str, list[float]] = {}
        self.noise: dict[str, list[float]] = {}
        self.mismatched: dict[str, int] = {}
        self.non_float: set[str] = set()
        self.wanted: set[str] = set()
        self.kept: tuple[dict[str, list], dict[str, list]] = ({}, {})
        self.count = 0

    def add(self, fp32: bytes, model: bytes, source: Any) -> None:
        """Run both models on every feed of ``source``."""
        from edgeq.auto.samples import energy
        from edgeq.calibrate.observe import ANALYSIS_THREADS, run_in_order
        from edgeq.report.evaluate import cpu_session

        # one thread each, a few feeds at once (calibrate/observe.py): the same figures on any core count
        key = ("fp32 session", id(fp32))
        ref_sess = self.sessions.get(key) if self.sessions is not None else None
        if ref_sess is None:
            ref_sess = cpu_session(fp32, ANALYSIS_THREADS)
            if self.sessions is not None:
                self.sessions[key] = ref_sess
        sess = cpu_session(model, ANALYSIS_THREADS)
        names = [o.name for o in ref_sess.get_outputs()]
        self.wanted = set(getattr(self.metric, "names", None) or names)  # what the metric reads (top1.py: the class outputs)
        for n in names:
            self.signal.setdefault(n, [])
            self.noise.setdefault(n, [])
            self.mismatched.setdefault(n, 0)
            self.kept[0].setdefault(n, [])
            self.kept[1].setdefault(n, [])
        def both(item: tuple[str, Any]) -> tuple[list, list]:
            return ref_sess.run(None, item[1]), sess.run(None, item[1])

        for _, (refs, gots) in run_in_order(both, source.items()):
            self.count += 1
            for n, r, g in zip(names, refs, gots):
                r, g = np.asarray(r), np.asarray(g)
                if self.metric is not None and n in self.wanted:
                    self.kept[0][n].append(r)
                    self.kept[1][n].append(g)
                if r.dtype.kind != "f":
                    self.non_float.add(n)
                    continue
                if r.shape != g.shape:
                    self.mismatched[n] += 1
                    continue
                s, e = energy(r, g)
                self.signal[n].append(s)
                self.noise[n].append(e)

    def score(self) -> Score:
        from edgeq.auto.samples import SampleFidelity
        from edgeq.auto.workbench import MAX_SHAPE_MISMATCH, Score, _stack

        outputs = {}
        for n in self.signal:
            if n in self.non_float:
                continue
            if self.mismatched[n] > MAX_SHAPE_MISMATCH * self.count or not self.signal[n]:
                outputs[n] = SampleFidelity.failed(self.count)
            else:
                outputs[n] = SampleFidelity.of(np.array(self.signal[n]), np.array(self.noise[n]))
        value = None
        if self.metric is not None and self.count:
            value = float(self.metric({n: _stack(v) for n, v in self.kept[0].items() if v},
                                      {n: _stack(v) for n, v in self.kept[1].items() if v}))
        return Score.of(outputs, value, self.count)


def check_on(fp32: bytes, model: bytes, source: Any, metric: Any = None, sessions: dict | None = None) -> Score:
    """Run both models on every feed of ``source``; per-sample energies only are kept (and the
    outputs, stacked, when a ``metric`` needs them); ``sessions``: see ``_Tally``."""
    tally = _Tally(metric, sessions)
    tally.add(fp32, model, source)
    return tally.score()


def check_cross_fitted(search: Any, candidate: Any, drawn: Any, fp32: bytes, cals: dict,
                       transform: Any = None) -> Score:
    """``candidate`` judged on every calibration sample out of sample (samples.py (2)): the
    held-out quarter by ``candidate`` itself, each other quarter by the same configuration built
    on ranges calibrated without that quarter (``cals`` caches those calibrations per float model).
    ``transform(model) -> bytes``: what is judged of each build (its weights stored otherwise:
    ``size_fit.py``), else the build itself; with it, the refits and the fp32 session are kept in
    ``cals`` for the next call (the same candidate judged under another plan builds them once)."""
    from edgeq.auto.calib import calibrate_once
    from edgeq.auto.latency import precision_changes

    def judged_form(config: Any) -> Any:
        return config.data if transform is None else transform(config.result.model)

    tally = _Tally(search.bench.metric, sessions=cals if transform is not None else None)
    data = judged_form(candidate)
    tally.add(fp32, data, drawn.held)
    fitted = id(candidate.model) in getattr(search, "fitted", {})  # (4): out of sample for the fit too
    held = tally.score() if fitted else None  # the held-out quarter alone: all the tally holds so far
    if not candidate.bias and not precision_changes(candidate.result.model):
        # no activation quantized with a calibrated range (dynamic and per-token MatMuls, weight-only
        # Gathers) and no bias correction: ranges from other samples would build the same model
        for _, judged in drawn.folds:
            tally.add(fp32, data, judged)
        return _with_held_bound(tally.score(), held)
    for j, (train, _) in enumerate(drawn.folds):
        key = (id(candidate.model), j)
        if key not in cals:
            cals[key] = (candidate.model, calibrate_once(candidate.model, train, search.bench.config, progress=False))
    if getattr(search, "ahead", None) is not None:  # every refit built at once on a cluster's workers (ahead.py)
        search.ahead.plan([dict(model=candidate.model, cal=cals[(id(candidate.model), j)][1], methods=candidate.methods,
                                base=candidate.base, exclude=candidate.exclude, bias=candidate.bias,
                                int16=candidate.int16, fp16=candidate.fp16, per_token=candidate.per_token,
                                dynamic=candidate.dynamic, record=transform is None)
                           for j in range(len(drawn.folds)) if ("refit", id(candidate), j) not in cals])
    for j, (_, judged) in enumerate(drawn.folds):
        key = (id(candidate.model), j)
        built = ("refit", id(candidate), j)  # kept where a transform judges the same refits again (size_fit.py)
        refit = cals.get(built) or search.build(
            f"{candidate.name} (ranges without quarter {j + 2})", candidate.model, cals[key][1], candidate.methods,
            candidate.base, candidate.exclude, record=False, bias=candidate.bias, int16=candidate.int16,
            fp16=candidate.fp16, per_token=candidate.per_token, dynamic=candidate.dynamic)
        if transform is not None:
            cals[built] = refit
        tally.add(fp32, judged_form(refit), judged)
        del refit
    return _with_held_bound(tally.score(), held)


def _with_held_bound(score: Score, held: Score | None) -> Score:
    """``score`` (over all samples) with each output's bound lowered to ``held``'s where that is
    lower (4)."""
    if held is None or not score.low or not held.low:
        return score
    import dataclasses

    low = {n: min(v, held.low.get(n, v)) for n, v in score.low.items()}
    return dataclasses.replace(score, low=low)


def _alternatives(search: Any, failed: list[Any], gap: float, target: float | None) -> list[Any]:
    """The configurations to check next: those that met the target on the scoring samples and beat
    fp32 by ``MIN_WIN``; first those whose scoring SQNR minus ``gap`` (the most the gate fell
    below the scoring samples' figure so far) still reaches ``target`` (more layers kept out of
    int8: they can absorb the gap), fastest first, then the rest, fastest first."""
    from edgeq.auto.placement import MIN_WIN

    fp32_ms = getattr(search, "fp32_ms", None)
    if fp32_ms is None:
        return []
    ok = [c for c in search.tried if c not in failed and search.meets(c) and c.latency_ms is not None
          and (c.has_int8() or c.fp16) and c.latency_ms <= fp32_ms * (1 - MIN_WIN)]

    def absorbs(c: Any) -> bool:
        return target is None or not math.isfinite(gap) or c.score.min_sqnr - gap >= target

    return sorted(ok, key=lambda c: (not absorbs(c), c.latency_ms))[:MAX_ALTERNATIVES]


def gate_figure(verdict: str, figure: str) -> str:
    """``verdict`` with its search-time "min output SQNR X dB" replaced by ``figure`` (the gate's):
    the figure ends the pick's sentence, which notes after a semicolon may follow."""
    return re.sub(r"min output SQNR [-\d.]+ dB(?=;|$)", figure, verdict, count=1)


def _missed_sqnr_only(search: Any, checked: Score, target: float | None) -> bool:
    """The check missed on the SQNR bound, and met the metric (or there is none): what a search
    aiming higher in dB can make up for."""
    return target is not None and checked.meets(None, search.min_score) and not checked.meets(target, None)


def final_gate(search: Any, chosen: Any, verdict: str, drawn: Any, float_model: Any,
               search_again: Any = None) -> tuple[Any, str, dict]:
    """(answer, verdict, gate record): see the module docstring. ``search_again(gap, target,
    fp32)``: the search again of (2) (``retarget.retarget`` bound to the search's own steps)."""
    from edgeq.auto.placement import float_answer
    from edgeq.auto.state import SQNR_MARGIN_DB
    from edgeq.auto.summary import metric_label
    from edgeq.auto.workbench import model_bytes_of

    target = None if search.min_sqnr is None else search.min_sqnr - SQNR_MARGIN_DB  # the user's own
    record: dict[str, Any] = {"what": drawn.gate_what, "target_db": target, "min_score": search.min_score,
                              "failed": []}
    if verdict.startswith("fp32") or drawn.gate is None:
        record.update(configuration=chosen.name, passed=True, exact=verdict.startswith("fp32"))
        return chosen, verdict, record
    fp32 = model_bytes_of(float_model)
    failed: list[Any] = []
    candidate = chosen
    search.bar.update(search.task, description=f"auto: checking the answer on all {drawn.gate_what}")
    cals: dict = {}
    gap = 0.0  # how far the gate's bound fell below the scoring samples' figure, at most
    aimed, again = -math.inf, []  # the gap the last search again aimed above; what each built
    while candidate is not None:
        if drawn.folds and not candidate.name.startswith("fp16 (whole model)"):  # no ranges to refit there
            checked = check_cross_fitted(search, candidate, drawn, fp32, cals)
        else:
            checked = check_on(fp32, candidate.data, drawn.gate, search.bench.metric)
        logger.info("auto gate: %s on %d samples -> %.2f dB (bound %.2f)", candidate.name, checked.samples,
                    checked.min_sqnr, checked.min_low)
        if checked.meets(target, search.min_score):
            record.update(configuration=candidate.name, passed=True, **gate_dict(checked))
            fit = getattr(search, "fitted", {}).get(id(candidate.model))
            if fit and drawn.folds:
                record["fitted"] = (f"its weights were fitted to the calibration samples ({fit}): the bound is the lower "
                                    f"of the bound over all of them and over the {len(drawn.held)} held out of the fit")
            # the verdict's figure is the gate's, over every sample checked, not the search's estimate
            caution = few_carriers_note(checked)
            verdict = gate_figure(verdict, f"min output SQNR {checked.min_sqnr:.1f} dB on all {checked.samples} "
                                  f"{drawn.gate_what} (bound {checked.min_low:.1f} dB){caution}")
            if candidate is not chosen:
                first = record["failed"][0]
                verdict = (f"int8 configuration {candidate.name!r}: {candidate.latency_ms:.3f} ms vs fp32 "
                           f"{search.fp32_ms:.3f} ms ({search.fp32_ms / candidate.latency_ms:.2f}x); the first pick "
                           f"{first['configuration']!r} missed the target on all {checked.samples} "
                           f"{drawn.gate_what} (bound {first['bound_db']} dB)")
                if again:
                    verdict += (f"; the search ran again {len(again)} time(s), aiming at up to {again[-1]['aim_db']} dB "
                                f"({sum(len(a['configurations']) for a in again)} configuration(s) met the aims)")
                verdict += caution
                candidate.result.ranges = search.cal.table_for(candidate.methods, candidate.base)
            return candidate, verdict, record
        record["failed"].append({"configuration": candidate.name, **gate_dict(checked)})
        failed.append(candidate)
        if math.isfinite(candidate.score.min_sqnr) and math.isfinite(checked.min_low):
            gap = max(gap, candidate.score.min_sqnr - checked.min_low)
        if (search_again is not None and len(again) < MAX_SEARCHES and _missed_sqnr_only(search, checked, target)
                and gap > aimed + MIN_GAP_GROWTH):  # (2) aiming above the largest gap so far (retarget.py)
            aimed = gap
            added = search_again(gap, target, fp32)
            again.append({"aim_db": _db(target + gap + SQNR_MARGIN_DB), "configurations": [
                {"configuration": c.name, "scoring_db": _db(c.score.min_sqnr), "ms": round(c.latency_ms, 4)}
                for c in added]})
            record["searched_again"] = again
        rest = _alternatives(search, failed, gap, target)
        candidate = rest[0] if rest and len(failed) <= MAX_ALTERNATIVES else None
    first = record["failed"][0]
    what = (f"min output SQNR bound {first['bound_db']} dB < {target:g} dB" if target is not None
            and not first["bound_db"] == "inf" and (first["bound_db"] == "-inf" or first["bound_db"] < target)
            else f"{metric_label(search.bench.metric)} {_score(first.get('metric'))} < {search.min_score}")
    reason = (f"the best int8 configuration ({chosen.name!r}) met the target on the {len(search.bench.feeds)} scoring "
              f"samples but not on all {first['samples']} {drawn.gate_what} ({what}; worst sample "
              f"{first['worst_sample_db']} dB), nor did {len(failed) - 1} alternative(s)")
    answer, verdict = float_answer(search, chosen, float_model, getattr(search, "fp32_original", None), reason)
    record.update(configuration=answer.name, passed=True, exact=True)
    return answer, verdict, record
