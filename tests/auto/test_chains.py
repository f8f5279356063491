"""Auto's decision chains as state machines (``auto/chains.py``) and run ahead (``auto/ahead.py``):
the same steps as the loops they replace, and fewer waits with more workers."""

from __future__ import annotations

import math
import random

import pytest

from edgeq.auto.ahead import frontier
from edgeq.auto.chains import Ladder, Methods, TakeBack, largest, smallest


def _run(state, probe, after, outcome):
    """The chain's steps (probes) and its last state's probes that met."""
    steps = []
    while state is not None:
        key = probe(state)
        steps.append(key)
        state = after(state, outcome(key))
    return steps


# -- the loops the chains replace (as search.py had them) ---------------------------------------
def _old_smallest(n, meets):
    lo, hi, found, steps = 1, n, None, []
    while lo <= hi:
        k = (lo + hi) // 2
        steps.append(k)
        if meets(k):
            found, hi = k, k - 1
        else:
            lo = k + 1
    return steps, found


def _old_largest(n, meets):
    lo, hi, found, steps = 1, n, None, []
    while lo <= hi:
        j = (lo + hi) // 2
        steps.append(j)
        if meets(j):
            found, lo = j, j + 1
        else:
            hi = j - 1
    return steps, found


def _old_take_back(names, base, meets):
    steps, current, i = [], base, 0
    while i < len(names):
        def trial(length, current=current, i=i):
            group = set(names[i:i + length])
            ex = tuple(n for n in current if n not in group)
            steps.append(ex)
            return ex
        met, met_at, missed_at, length = current, 0, None, 1
        while i + met_at < len(names):
            length = min(length, len(names) - i)
            t = trial(length)
            if not meets(t):
                missed_at = length
                break
            met, met_at, length = t, length, length * 2
        while missed_at is not None and missed_at - met_at > 1:
            mid = (met_at + missed_at) // 2
            t = trial(mid)
            if meets(t):
                met, met_at = t, mid
            else:
                missed_at = mid
        current = met
        i = len(names) if missed_at is None else i + met_at + 1
    return steps, current


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 33, 64])
def test_bisections_take_the_old_loops_steps(n):
    for cut in range(n + 2):
        steps, found = _old_smallest(n, lambda k, cut=cut: k >= cut)
        assert _run(smallest(1, n), smallest.probe, smallest.after, lambda k, cut=cut: k >= cut) == steps
        steps, found = _old_largest(n, lambda j, cut=cut: j <= cut)
        assert _run(largest(1, n), largest.probe, largest.after, lambda j, cut=cut: j <= cut) == steps


def test_runs_taken_back_take_the_old_loops_steps_on_any_outcomes():
    rng = random.Random(3)
    for trial in range(300):
        names = [f"u{i}" for i in range(rng.randint(1, 12))]
        base = ("x", *names, "y")
        noise = {n: rng.choice([0.0, 0.2, 1.0, 3.0]) for n in names}
        budget = rng.uniform(0, 6)
        if trial % 3 == 0:  # additive noise: monotone
            def meets(ex, noise=noise, budget=budget):
                return sum(v for k, v in noise.items() if k not in ex) <= budget
        else:  # not monotone at all: the chain must still take the loop's steps
            table = {}

            def meets(ex, table=table):
                return table.setdefault(ex, rng.random() < 0.6)
        steps, current = _old_take_back(names, base, meets)
        chain = TakeBack(names)
        got = _run(chain.start(base), chain.probe, chain.after, meets)
        assert got == steps


def test_the_ladder_and_the_range_methods_take_the_old_loops_steps():
    rng = random.Random(7)
    for _ in range(200):
        names = [f"u{i}" for i in range(rng.randint(0, 6))]
        rungs = {n: rng.sample(["int8-per-token", "int16"], rng.randint(0, 2)) for n in names}
        table = {}

        def meets(key, table=table):
            return table.setdefault(key, rng.random() < 0.4)
        # the old ladder loop
        steps, ex, i16, p16, pt = [], ("z", *names), (), (), ()
        for name in names:
            for rung in rungs[name]:
                key = (tuple(n for n in ex if n != name), i16 + ((name,) if rung == "int16" else ()), p16,
                       pt + ((name,) if rung == "int8-per-token" else ()))
                steps.append(key)
                if meets(key):
                    ex, i16, p16, pt = key
                    break
        chain = Ladder(names, rungs)
        assert _run(chain.start(("z", *names), (), (), ()), chain.probe, chain.after, meets) == steps

        choices, base = ("minmax", "entropy", "percentile"), "minmax"
        own = {n: rng.choice(choices) for n in names if rng.random() < 0.5}
        steps, current = [], dict(own)
        for name in names:
            for method in choices:
                if method == current.get(name, base):
                    continue
                key = tuple({**current, name: method}.items())
                steps.append(key)
                if meets(key):
                    current = dict(key)
        chain = Methods(names, choices, base)
        assert _run(chain.start(own), chain.probe, chain.after, meets) == steps


def _rounds(state, probe, after, outcome, width, likely=None):
    """Rounds of ``width`` builds at once (a round: the frontier submitted, every build done) the
    chain needs, reading results in order as ``Search.build`` does."""
    done, rounds, steps = set(), 0, []
    while state is not None:
        if probe(state) not in done:
            rounds += 1
            done |= {k for k, _ in frontier(state, probe, after, width, likely)}
        steps.append(probe(state))
        state = after(state, outcome(probe(state)))
    return rounds, steps


@pytest.mark.parametrize("width, most", [(1, 6), (3, 3), (7, 2), (15, 2)])
def test_a_bisection_waits_log_width_times_less(width, most):
    """63 units: 6 steps one at a time; 2 rounds of 7 builds (3 levels each) with 7 workers."""
    for cut in range(1, 65):
        rounds, steps = _rounds(smallest(1, 63), smallest.probe, smallest.after, lambda k, cut=cut: k >= cut, width)
        assert steps == _old_smallest(63, lambda k, cut=cut: k >= cut)[0]
        assert rounds <= most


def _additive_cases(rng, names, cases=20):
    """(meets, the old loop's steps) for ``cases`` made-up models where each unit back in int8
    adds its own noise (exponential) and the target allows a random total of it."""
    for _ in range(cases):
        noise = {n: rng.expovariate(1.0) for n in names}
        budget = rng.uniform(5, 40)

        def meets(ex, noise=noise, budget=budget):
            return sum(v for k, v in noise.items() if k not in ex) <= budget
        yield meets, _old_take_back(names, tuple(names), meets)[0]


def test_runs_taken_back_wait_less_with_more_workers():
    """MAX_REQUANTIZE's 64 units, additive noise: rounds fall with the width, steps stay the loop's."""
    rng = random.Random(11)
    names = [f"u{i}" for i in range(64)]
    total, steps_all = dict.fromkeys((1, 2, 4, 8, 16), 0), 0
    for meets, reference in _additive_cases(rng, names):
        chain = TakeBack(names)
        steps_all += len(reference)
        for width in total:
            rounds, steps = _rounds(chain.start(tuple(names)), chain.probe, chain.after, meets, width)
            assert steps == reference
            total[width] += rounds
    assert total[1] == steps_all  # one worker: a round a step
    assert total[2] < total[1] and total[4] < total[2] and total[8] < total[4]
    assert total[8] <= math.ceil(total[1] / 2.5), total


def test_a_likely_outcome_lets_the_workers_look_far_ahead():
    """Where each step's outcome is foreseen (the additive noise model, ``Search.likely``), the
    workers follow the likely path: rounds fall about as the width grows; a predictor that is
    wrong one time in five still beats breadth first; the steps are the loop's either way."""
    rng = random.Random(5)
    names = [f"u{i}" for i in range(64)]
    widths = (1, 2, 4, 8, 16)
    seen, guessed, even = (dict.fromkeys(widths, 0) for _ in range(3))
    steps_all = 0
    for meets, reference in _additive_cases(rng, names):
        chain = TakeBack(names)
        flips = {}

        def foreseen(run, chain=chain, meets=meets):
            return 0.85 if meets(chain.probe(run)) else 0.15

        def guess(run, chain=chain, meets=meets, flips=flips):  # wrong one time in five
            wrong = flips.setdefault(chain.probe(run), rng.random() < 0.2)
            return 0.85 if meets(chain.probe(run)) != wrong else 0.15
        steps_all += len(reference)
        for width in widths:
            for table, likely in ((seen, foreseen), (guessed, guess), (even, None)):
                rounds, steps = _rounds(chain.start(tuple(names)), chain.probe, chain.after, meets, width, likely)
                assert steps == reference
                table[width] += rounds
    assert seen[1] == guessed[1] == even[1] == steps_all
    for width in widths[1:]:
        assert seen[width] <= guessed[width] <= even[width]
    assert seen[8] <= 1.3 * steps_all / 8, (seen, steps_all)  # near one round per 8 steps
    assert guessed[8] < even[8]

