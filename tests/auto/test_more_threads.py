"""An int8 pick timed at 1 thread is timed at 2 as well: the verdict says so where it is slower
than fp32 there (the answer stays the one for the thread count asked for)."""

from __future__ import annotations

import pytest

import edgeq.auto.latency as latency
from edgeq.auto.placement import _more_threads


@pytest.fixture
def timings(monkeypatch):
    calls = []

    def fake(models, feed, *, provider, threads, budget_s, **_):
        calls.append((provider, threads, budget_s))
        return dict(fake.times)

    monkeypatch.setattr(latency, "measure", fake)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    fake.times = {}
    return fake, calls


def test_slower_at_two_threads_is_said_with_the_figures(timings):
    fake, calls = timings
    fake.times = {"fp32": 0.71, "pick": 0.82}
    note = _more_threads(b"fp32", b"pick", {}, "cpu", 1, 0.80)
    assert calls == [("cpu", 2, 1.0)]
    assert "at 2 threads it measured 0.87x fp32 (0.820 vs 0.710 ms)" in note and "--threads" in note


def test_no_note_where_it_is_as_fast_or_not_timed_at_one_thread(timings):
    fake, calls = timings
    fake.times = {"fp32": 0.71, "pick": 0.72}  # within timing noise (3%)
    assert _more_threads(b"fp32", b"pick", {}, "cpu", 1, 0.80) == ""
    assert _more_threads(b"fp32", b"pick", {}, "cpu", 4, 0.80) == ""  # the user chose the thread count
    assert _more_threads(b"fp32", b"pick", {}, "cuda", 1, 0.80) == ""
    assert len(calls) == 1


def test_no_note_where_fp32_itself_is_slower_at_two_threads(timings):
    fake, _ = timings
    fake.times = {"fp32": 8.04, "pick": 11.21}  # fp32 3.93 ms at 1 thread: no second core to be had
    assert _more_threads(b"fp32", b"pick", {}, "cpu", 1, 3.93) == ""


def test_one_core_machines_skip_it(timings, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert _more_threads(b"fp32", b"pick", {}, "cpu", 1, 0.80) == "" and timings[1] == []


def test_the_gates_figure_replaces_the_searchs_with_a_note_behind_it():
    from edgeq.auto.gate import gate_figure

    verdict = ("int8 configuration 'int8 uniform mse': 2.960 ms vs fp32 3.928 ms (1.33x) on cpu with 1 thread(s), "
               "min output SQNR 61.1 dB; at 2 threads it measured 0.72x fp32 (11.208 vs 8.044 ms): if you ...")
    got = gate_figure(verdict, "min output SQNR 36.3 dB on all 32 samples (bound 30.2 dB)")
    assert "61.1" not in got and "min output SQNR 36.3 dB on all 32 samples (bound 30.2 dB); at 2 threads" in got
    assert gate_figure("... min output SQNR 35.3 dB", "X") == "... X"


def test_an_fp32_answer_on_a_cpu_without_vnni_says_where_int8_pays(monkeypatch):
    """The verdict of a model whose int8 lost on the timing, on a CPU that saturates 8-bit
    products (no VNNI), says so and where int8 pays; elsewhere it says nothing of it."""
    from edgeq.auto import auto_quantize
    from edgeq.runtime import cpu
    from ortutil import int8_pays_timing

    from .nets import relu_mlp

    def fp32_wins(models, feed, **kw):
        times = int8_pays_timing(models, feed, **kw)
        return {k: (0.5 if k in ("fp32", "original") else v + 10.0) for k, v in times.items()}

    monkeypatch.setattr(latency, "measure", fp32_wins)
    model, feeds = relu_mlp()
    for saturates, said in (("1", True), ("0", False)):
        monkeypatch.setenv(cpu.ENV, saturates)
        verdict = auto_quantize(model, feeds, min_sqnr=20.0, progress=False).report["auto"]["verdict"]
        assert verdict.startswith("fp32") and "not faster than fp32" in verdict, verdict
        assert ("this CPU has no VNNI" in verdict) == said, verdict
