"""Float units taken back to int8 in runs (``search._requantize``): lengths 1, 2, 4 ... then a
binary search, instead of one build per unit. Where noise adds up, the answer is the
one-at-a-time loop's, unit for unit, in fewer builds when long runs come back; where it does not,
the answer still meets the target (every accepted configuration was built and scored)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeq.auto import latency, search
from edgeq.auto.state import Config
from edgeq.auto.workbench import Score

from . import test_knapsack as knapsack_tests


class FakeSearch(knapsack_tests.FakeSearch):
    """test_knapsack's stand-in, with the output SQNR of any set of float units given by ``db_of``."""

    def __init__(self, db_of, min_sqnr):
        super().__init__(ms={})
        self.db_of, self.min_sqnr = db_of, min_sqnr

    def build(self, name, model, cal, methods, base, exclude=(), record=True, bias=False):
        self.builds += 1
        c = Config(name, tuple(exclude), Score({"y": self.db_of(set(exclude))}), None, model, {}, base, bias)
        if record:
            self.tried.append(c)
        return c


def _one_at_a_time(db_of, units, min_sqnr):
    exclude, builds, tried = set(units), 0, {}
    for u in units:
        builds += 1
        db = db_of(exclude - {u})
        if db >= min_sqnr:
            exclude.discard(u)
        else:
            tried[u] = round(db, 3)
    return exclude, builds, tried


def _additive(noise):
    def db_of(exclude):
        added = sum(v for k, v in noise.items() if k not in exclude)
        return -10 * math.log10(added) if added else 120.0
    return db_of


@pytest.mark.parametrize("seed", range(12))
def test_where_noise_adds_up_the_answer_is_the_loops(monkeypatch, seed):
    monkeypatch.setattr(latency, "gaps", lambda plan, graph, order: [])
    rng = np.random.default_rng(seed)
    units = [f"u{i}" for i in range(int(rng.integers(1, 40)))]
    noise = {u: float(v) for u, v in zip(units, rng.lognormal(-9.5, 1.5, len(units)))}
    db_of = _additive(noise)
    target = float(rng.uniform(20, 40))
    want, loop_builds, want_tried = _one_at_a_time(db_of, units, target)
    fake = FakeSearch(db_of, target)
    found = Config("int8, all float", tuple(units), Score({"y": 120.0}), None, None, {}, "minmax")
    tried = {}
    answer = search._requantize(fake, found, None, units, tried)
    assert set(answer.exclude) == want
    assert {u: t["int8"] for u, t in tried.items()} == want_tried  # each unit left float measured as the loop does
    assert fake.meets(answer)
    if len(want) <= len(units) // 4:  # long runs back: fewer builds
        assert fake.builds < loop_builds, (fake.builds, loop_builds)


def test_where_noise_does_not_add_up_the_answer_still_meets_the_target(monkeypatch):
    """Noise that cancels: two units together are quieter than either alone. A run is accepted
    only as built and scored."""
    monkeypatch.setattr(latency, "gaps", lambda plan, graph, order: [])
    rng = np.random.default_rng(5)
    units = [f"u{i}" for i in range(30)]
    base = {u: float(v) for u, v in zip(units, rng.lognormal(-9.0, 1.0, 30))}

    def db_of(exclude):
        int8 = [u for u in units if u not in exclude]
        added = sum(base[u] for u in int8) * (0.5 if len(int8) % 2 == 0 else 1.0)
        return -10 * math.log10(added) if added else 120.0

    fake = FakeSearch(db_of, 33.0)
    found = Config("int8, all float", tuple(units), Score({"y": 120.0}), None, None, {}, "minmax")
    answer = search._requantize(fake, found, None, units)
    assert fake.meets(answer) and len(answer.exclude) < len(units)
    assert answer in fake.tried and answer.name.startswith("int8, ")
