"""The state machines of auto's decision chains (``ahead.py`` (1)): each step's probe and the
state after it, so that one loop runs the chain and ``ahead.frontier`` sees its futures.

    state = smallest(1, n)
    while state is not None:
        met = meets(build(smallest.probe(state)))
        state = smallest.after(state, met)

- ``smallest`` / ``largest``: a binary search for the smallest (largest) ``k`` in ``[lo, hi]``
  that meets the target (the ranked prefix in float; the knapsack's int8 count); the state is
  ``(lo, hi)``, the probe ``k``.
- ``TakeBack``: units taken back to int8 in runs (``search._requantize``): from unit ``i`` on,
  lengths 1, 2, 4 ... until one misses, then a bisection between the last that met and the first
  that missed; the run taken back, the unit after it left float, the next run after that.
- ``Ladder``: each float unit in turn tries the ladder's precisions, first choice first, and
  keeps the first that meets the target (``search._ladder``).
- ``Methods``: each tensor in turn tries each range method other than its own, and keeps one
  that scores better (``search._refine_methods``).
"""

from __future__ import annotations

import dataclasses

__all__ = ["Ladder", "Methods", "Pick", "Rung", "Run", "TakeBack", "largest", "smallest"]


class _Bisection:
    def __init__(self, keep_low: bool) -> None:
        self.keep_low = keep_low  # smallest: a k that meets moves the upper end below it

    def __call__(self, lo: int, hi: int) -> tuple[int, int] | None:
        return (lo, hi) if lo <= hi else None

    @staticmethod
    def probe(state: tuple[int, int]) -> int:
        return (state[0] + state[1]) // 2

    def after(self, state: tuple[int, int], met: bool) -> tuple[int, int] | None:
        lo, hi = state
        k = (lo + hi) // 2
        if met == self.keep_low:
            return self(lo, k - 1)
        return self(k + 1, hi)


smallest = _Bisection(keep_low=True)
largest = _Bisection(keep_low=False)


@dataclasses.dataclass(frozen=True)
class Run:
    """One step of ``TakeBack``: units ``names[i:]`` from float configuration ``base`` (its
    float units); ``met_at`` units met (taken back together), ``missed_at`` the shortest that
    missed (None while doubling), ``length`` the next doubling length."""

    i: int
    base: tuple[str, ...]
    met_at: int = 0
    missed_at: int | None = None
    length: int = 1


class TakeBack:
    """The runs of units taken back to int8 (module docstring): ``probe`` is the float units of
    the configuration a step builds; ``after`` the next step."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def start(self, base: tuple[str, ...]) -> Run | None:
        return Run(0, base) if self.names else None

    def length(self, run: Run) -> int:
        """The number of units the step takes back at once."""
        if run.missed_at is None:
            return min(run.length, len(self.names) - run.i)
        return (run.met_at + run.missed_at) // 2

    def exclude(self, run: Run, length: int | None = None) -> tuple[str, ...]:
        group = set(self.names[run.i : run.i + (self.length(run) if length is None else length)])
        return tuple(n for n in run.base if n not in group)

    def probe(self, run: Run) -> tuple[str, ...]:
        return self.exclude(run)

    def after(self, run: Run, met: bool) -> Run | None:
        length = self.length(run)
        met_at, missed_at = (length, run.missed_at) if met else (run.met_at, length)
        if missed_at is None:  # still doubling
            if run.i + met_at >= len(self.names):
                return None  # every unit taken back
            return Run(run.i, run.base, met_at, None, length * 2)
        if missed_at - met_at > 1:
            return Run(run.i, run.base, met_at, missed_at)
        return self.next_run(Run(run.i, run.base, met_at, missed_at))

    def next_run(self, run: Run) -> Run | None:
        """After ``run`` settled (``met_at`` taken back, the unit after them left float): the next run."""
        i = run.i + run.met_at + 1
        if i >= len(self.names):
            return None
        return Run(i, self.exclude(run, run.met_at))


@dataclasses.dataclass(frozen=True)
class Rung:
    """One step of ``Ladder``: unit ``names[j]`` tries its ``r``-th precision on top of the
    configuration with these float, int16, fp16 and per-token units."""

    j: int
    r: int
    exclude: tuple[str, ...]
    int16: tuple[str, ...] = ()
    fp16: tuple[str, ...] = ()
    per_token: tuple[str, ...] = ()


class Ladder:
    """Float units up the precision ladder (module docstring): ``rungs[name]`` are the
    precisions ``name`` tries ("int16", "fp16" or "int8-per-token"), in order."""

    def __init__(self, names: list[str], rungs: dict[str, list[str]]) -> None:
        self.names, self.rungs = names, rungs

    def start(self, exclude: tuple[str, ...], int16: tuple[str, ...], fp16: tuple[str, ...],
              per_token: tuple[str, ...]) -> Rung | None:
        return self._next(Rung(0, 0, exclude, int16, fp16, per_token))

    def _next(self, rung: Rung) -> Rung | None:
        while rung.j < len(self.names) and rung.r >= len(self.rungs[self.names[rung.j]]):
            rung = dataclasses.replace(rung, j=rung.j + 1, r=0)
        return rung if rung.j < len(self.names) else None

    def step(self, rung: Rung) -> tuple[str, str, dict[str, tuple[str, ...]]]:
        """(the unit, its precision, the build's exclude/int16/fp16/per_token)."""
        name = self.names[rung.j]
        precision = self.rungs[name][rung.r]
        layout = {"exclude": tuple(n for n in rung.exclude if n != name),
                  "int16": rung.int16 + ((name,) if precision == "int16" else ()),
                  "fp16": rung.fp16 + ((name,) if precision == "fp16" else ()),
                  "per_token": rung.per_token + ((name,) if precision == "int8-per-token" else ())}
        return name, precision, layout

    def probe(self, rung: Rung) -> tuple:
        return tuple(self.step(rung)[2].values())

    def after(self, rung: Rung, met: bool) -> Rung | None:
        if met:
            return self._next(Rung(rung.j + 1, 0, **self.step(rung)[2]))
        return self._next(dataclasses.replace(rung, r=rung.r + 1))


@dataclasses.dataclass(frozen=True)
class Pick:
    """One step of ``Methods``: tensor ``names[t]`` tries method ``choices[m]`` on top of ``methods``."""

    t: int
    m: int
    methods: tuple[tuple[str, str], ...]


class Methods:
    """Range methods per tensor (module docstring): ``choices`` tried in order, a tensor's own skipped."""

    def __init__(self, names: list[str], choices: tuple[str, ...], base: str) -> None:
        self.names, self.choices, self.base = names, choices, base

    def start(self, methods: dict[str, str]) -> Pick | None:
        return self._next(Pick(0, 0, tuple(methods.items())))

    def _next(self, pick: Pick) -> Pick | None:
        while pick.t < len(self.names):
            if pick.m >= len(self.choices):
                pick = Pick(pick.t + 1, 0, pick.methods)
            elif self.choices[pick.m] == dict(pick.methods).get(self.names[pick.t], self.base):
                pick = Pick(pick.t, pick.m + 1, pick.methods)
            else:
                return pick
        return None

    def step(self, pick: Pick) -> tuple[str, str, dict[str, str]]:
        """(the tensor, its method, the build's methods)."""
        name, method = self.names[pick.t], self.choices[pick.m]
        return name, method, {**dict(pick.methods), name: method}

    def probe(self, pick: Pick) -> tuple:
        return tuple(self.step(pick)[2].items())

    def after(self, pick: Pick, kept: bool) -> Pick | None:
        methods = tuple(self.step(pick)[2].items()) if kept else pick.methods
        return self._next(Pick(pick.t, pick.m + 1, methods))
