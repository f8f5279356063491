"""The fallback's second candidate: int8 units chosen by time saved per noise (auto/knapsack.py).

A made-up model where noise powers add up: one slow, noisy unit (an LSTM: the most sensitive by
noise, most of the time) and ten small convolutions. The ranked-prefix path keeps the LSTM
float and cannot take it back; the knapsack's answer runs the LSTM in int8 and keeps the
convolutions with the least time per noise float instead, and the search records both."""

from __future__ import annotations

import math
import types

from edgeq.auto import knapsack, latency, search
from edgeq.auto.state import Config, Search
from edgeq.auto.workbench import Score

CONVS = [f"conv{i}" for i in range(10)]
NOISE = {"lstm": 3e-4, **dict.fromkeys(CONVS, 0.6e-4)}  # each unit's output noise power in int8 (signal 1)
MS = {"lstm": 60.0, **dict.fromkeys(CONVS, 2.0)}


class FakeSearch:
    min_sqnr, min_score, gptq = 32.0, None, {}
    bar, task = types.SimpleNamespace(update=lambda *a, **k: None, advance=lambda *a: None), 0
    bench = types.SimpleNamespace(plan=lambda exclude: (None, types.SimpleNamespace(graph=None)))

    def __init__(self, ms=MS):
        self.tried, self.builds, self._ms = [], 0, dict(ms)
        self.planned, self.asked = set(), []  # (ahead.py) what the chains would run ahead, what they built

    def run_ahead(self, state, probe, after, build, likely=None):
        from edgeq.auto.ahead import frontier

        for _, s in frontier(state, probe, after, 4, likely):
            kwargs = build(s)
            self.planned.add(tuple(kwargs["exclude"]))

    ranking = types.SimpleNamespace(noise=NOISE, ranked=sorted(NOISE, key=lambda n: -NOISE[n]))
    likely = Search.likely  # the additive model is exact here: where to look ahead is always right

    def over_budget(self, step=""):
        return False

    def unit_ms(self):
        return self._ms

    def meets(self, c):
        return c.score.meets(self.min_sqnr, self.min_score)

    def build(self, name, model, cal, methods, base, exclude=(), record=True, bias=False):
        self.builds += 1
        self.asked.append(tuple(exclude))
        added = sum(v for k, v in NOISE.items() if k not in exclude)
        db = -10 * math.log10(added) if added else 120.0
        c = Config(name, tuple(exclude), Score({"y": db}), None, model, dict(methods), base, bias)
        if record:
            self.tried.append(c)
        return c


def _setup(monkeypatch):
    monkeypatch.setattr(latency, "gaps", lambda plan, graph, order: [])
    best = Config("int8 uniform minmax", (), Score({"y": -10 * math.log10(sum(NOISE.values()))}), None, None, {},
                  "minmax")
    ranked = sorted(NOISE, key=lambda n: -NOISE[n])  # the LSTM first
    return best, ranked, dict(NOISE)  # what "only n int8" adds


def test_the_knapsack_runs_the_slow_noisy_unit_in_int8_where_the_prefix_cannot(monkeypatch):
    best, ranked, noise = _setup(monkeypatch)
    fake = FakeSearch()
    prefix = search._prefix(fake, best, None, ranked, "fp32")
    prefix = search._requantize(fake, prefix, None, search._back_order(fake, ranked, noise, prefix.exclude))
    assert prefix.exclude == ("lstm",)  # 32.2 dB; the LSTM back: 30.5 dB < 32

    answer = knapsack.by_time(fake, best, None, search._back_order(fake, ranked, noise, tuple(ranked)), search._requantize)
    assert answer is fake.tried[-1] and answer.name.startswith(knapsack.NAME)
    assert "lstm" not in answer.exclude and len(answer.exclude) == 5  # 3e-4 + 5 x 0.6e-4: 32.2 dB
    assert fake.meets(answer)  # one more convolution back: 31.8 dB, missed
    saved = {c.name: sum(MS[n] for n in MS if n not in c.exclude) for c in (prefix, answer)}
    assert saved[answer.name] == 70.0 > saved[prefix.name] == 20.0  # what timing then chooses between
    # the prefix's bisection, the runs taken back and the knapsack's bisection each planned every
    # build they then asked for (ahead.py: on a cluster, a worker had it ready)
    assert fake.asked and set(fake.asked) <= fake.planned


def test_no_profile_no_second_candidate_and_one_layout_is_recorded_once(monkeypatch):
    best, ranked, noise = _setup(monkeypatch)
    fake = FakeSearch(ms={})
    assert knapsack.by_time(fake, best, None, search._back_order(fake, ranked, noise, tuple(ranked)), search._requantize) is None and fake.builds == 0

    fake = FakeSearch()
    first = knapsack.by_time(fake, best, None, search._back_order(fake, ranked, noise, tuple(ranked)), search._requantize)
    recorded = len(fake.tried)
    again = knapsack.by_time(fake, best, None, search._back_order(fake, ranked, noise, tuple(ranked)), search._requantize)  # the same layout: the one recorded comes back
    assert again is first and len(fake.tried) == recorded


def test_nothing_meets_the_target_nothing_is_recorded(monkeypatch):
    best, ranked, noise = _setup(monkeypatch)
    fake = FakeSearch()
    fake.min_sqnr = 42.5  # even one unit in int8 misses (0.6e-4: 42.2 dB)
    assert knapsack.by_time(fake, best, None, search._back_order(fake, ranked, noise, tuple(ranked)), search._requantize) is None and fake.tried == []


def test_the_knapsack_is_built_only_where_the_additive_model_says_it_may_pay(monkeypatch):
    best, ranked, noise = _setup(monkeypatch)
    fake = FakeSearch()
    prefix = search._prefix(fake, best, None, ranked, "fp32")
    order = search._back_order(fake, ranked, noise, tuple(ranked))
    assert knapsack.promising(fake, prefix, order, noise)  # the LSTM float: 60 of 80 ms left on the table

    fast = FakeSearch(ms={**MS, "lstm": 1.0})  # the noisy unit is cheap: keeping it float is the knapsack's answer
    prefix = search._prefix(fast, best, None, ranked, "fp32")
    order = search._back_order(fast, ranked, noise, tuple(ranked))
    assert prefix.exclude == ("lstm",) and order[-1] == "lstm"
    assert not knapsack.promising(fast, prefix, order, noise)
    assert not knapsack.promising(FakeSearch(ms={}), prefix, order, noise)  # no profile
