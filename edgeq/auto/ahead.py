"""Auto's decision chains run ahead on a cluster's workers: the same decisions, fewer waits.

    ahead = Ahead.open(search)                       # None unless the executor spreads work
    search.run_ahead(state, probe, after, recipe)    # before each step of a chain (state.py)

Auto's search is mostly chains: a binary search over the ranked prefix, the runs of units taken
back to int8 (lengths 1, 2, 4 ... then a bisection), the precision ladder unit by unit, the
per-tensor range methods one by one. Each step builds one configuration and waits for its score
before it knows the next; on one machine that is the whole cost, and a cluster's workers sat idle.

1. Each chain is a state machine: ``probe(state)`` is what the state builds (a hashable name of
   the step), ``after(state, met)`` the next state (None: the chain is done). ``frontier`` walks
   the tree of the chain's possible futures from the current state, both outcomes of every step,
   most likely first, and returns the first ``width`` probes. How likely a step meets the target
   comes from the additive noise model of the ranking (``Search.likely``: the units' ranking
   noise, scaled to a configuration measured; the ranked prefix's and the knapsack's bisections,
   the runs taken back); where there is none (the ladder, the range methods), both outcomes are
   even and the walk is breadth first: ``log2(width + 1)`` steps a round.
2. ``Ahead.plan`` submits those not yet in flight to the workers (``remote.build_and_score``:
   the variant built from the same float model, configuration and ranges table, scored on the
   same feeds against the same fp32 outputs, at one onnxruntime thread) and cancels the ones in
   flight that the current state can no longer reach (the branch not taken).
3. ``Search.build`` takes a configuration from a worker where one was submitted: its score, the
   bytes onnxruntime loads (for the configurations recorded for timing) and what its graph holds
   (``Config.facts``); its ``QuantResult`` is built here only when it is asked for (the answer,
   a report line), by the same code (``Config.later``). The chain then decides exactly as it
   would have on its own, on the same scores: the answer is the same bytes as one process's.
4. Only on a distributed executor with ``MIN_WORKERS`` workers or more, and only for configurations a
   worker can build from the float model, the ranges and the channel means (bias correction, sent
   with each build: a few hundred kB at most);
   GPTQ-rounded weights (their Hessians stay here) are built here, as before.
5. The step at hand, where no worker has it in flight yet, is built here (this process scores
   its feeds concurrently: faster than one worker's single thread) while the workers take the
   steps after it.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["Ahead", "MIN_WORKERS", "frontier", "ranks_on", "spreads"]

logger = logging.getLogger(__name__)

MAX_JOBS = 4  # float models (with their scoring feeds) kept in the object store at once
# workers from which auto's chains run ahead: a worker scores a variant's feeds on one thread,
# where one process scores them concurrently, so a speculative round must cover several steps
# (mobilenet224 on a 16-core Xeon: 0.83x of one process with 1 or 2 workers, 1.18x with 4)
MIN_WORKERS = 4


def spreads(executor: Any) -> bool:
    """Whether auto's chains and the gate's refits run ahead on ``executor`` (``MIN_WORKERS``)."""
    return executor.distributed and executor.width >= MIN_WORKERS


def ranks_on(executor: Any, local_width: int) -> bool:
    """Whether auto's per-layer ranking (independent variants) goes to ``executor``'s workers:
    where they score at least half as many variants at once as this process scores feeds at once
    (``local_width``): 2 workers on a 2-core machine, 4 on a 16-core one. Below, one process's
    concurrent scoring ranks faster (mobilenet224 on a 16-core Xeon: 0.83x with 1 or 2 workers)."""
    return executor.distributed and executor.width >= max(2, local_width // 2)


def frontier(state: Any, probe: Callable[[Any], Hashable], after: Callable[[Any, bool], Any], width: int,
             likely: Callable[[Any], float] | None = None) -> list[tuple[Hashable, Any]]:
    """The first ``width`` distinct (probe, state) of the chain's future from ``state`` (itself
    first), most likely first: each step's outcome is "met" with probability ``likely(state)``
    (0.5 where not given: breadth first), a future state as likely as the path to it."""
    out: dict[Hashable, Any] = {}
    heap: list[tuple[float, int, Any]] = [(-1.0, 0, state)]
    count = 1
    while heap and len(out) < width:
        chance, _, s = heapq.heappop(heap)
        key = probe(s)
        if key not in out:
            out[key] = s
        p = 0.5 if likely is None else min(max(likely(s), 0.05), 0.95)
        for met, q in ((True, p), (False, 1.0 - p)):
            nxt = after(s, met)
            if nxt is not None:
                heapq.heappush(heap, (chance * q, count, nxt))
                count += 1
    return list(out.items())


def recipe_key(model: Any, cal: Any, methods: dict[str, str], base: str, exclude: tuple[str, ...], bias: bool = False,
               int16: tuple[str, ...] = (), fp16: tuple[str, ...] = (), per_token: tuple[str, ...] = (),
               dynamic: tuple[str, ...] = ()) -> tuple:
    """What decides a build's bytes (``Search.build``'s arguments but its name and ``record``):
    the float model and the calibration by identity (the gate's refits differ in ``cal`` alone)."""
    return (id(model), id(cal), tuple(sorted(methods.items())), base, tuple(exclude), bias, tuple(int16),
            tuple(fp16), tuple(per_token), tuple(dynamic))


class Ahead:
    """The builds submitted ahead of one search's chains (module docstring)."""

    def __init__(self, search: Any, executor: Any) -> None:
        self.search, self.executor = search, executor
        self.width = executor.width
        self.jobs: dict[tuple, tuple[Any, Any]] = {}  # (model, config, feeds) ids -> (objects kept alive, shared job)
        # recipe key -> (Pending, its float model and calibration: kept alive while it is in
        # flight, so that no other object takes their ids, which the key holds)
        self.pending: dict[tuple, tuple[Any, tuple[Any, Any]]] = {}
        self.submitted = self.taken = 0
        self._means: tuple[Any, dict[str, Any]] | None = None

    @classmethod
    def open(cls, search: Any) -> Ahead | None:
        from edgeq import cluster

        executor = cluster.current()
        return cls(search, executor) if spreads(executor) else None

    def can(self, model: Any) -> bool:
        """Whether a worker can build this configuration (module docstring (4))."""
        return self.search.gptq.get(id(model)) is None

    def plan(self, builds: list[dict[str, Any]], here_first: bool = False) -> None:
        """Submit ``builds`` (``Search.build`` keyword arguments, with ``cal``) not yet in flight
        (``here_first``: the first of them, the step at hand, is built here unless a worker has
        it already: (5)); cancel those in flight that are not among them (no state reachable now
        asks for them)."""
        from edgeq.auto.remote import Recipe, build_and_score

        keys = {}
        for kwargs in builds:
            if self.can(kwargs["model"]):
                keys[recipe_key(**{k: v for k, v in kwargs.items() if k != "record"})] = kwargs
        first = next(iter(keys), None) if here_first else None
        for key in [k for k in self.pending if k not in keys]:
            self.pending.pop(key)[0].cancel()
        for key, kwargs in keys.items():
            if key in self.pending or key == first:
                continue
            search, model = self.search, kwargs["model"]
            exclude, int16 = tuple(kwargs.get("exclude", ())), tuple(kwargs.get("int16", ()))
            table = search._table(kwargs["cal"], kwargs["methods"], kwargs["base"], exclude, int16, model)
            means = self.means(kwargs["cal"]) if kwargs.get("bias") else None
            recipe = Recipe(table, exclude, int16, tuple(kwargs.get("fp16", ())), tuple(kwargs.get("per_token", ())),
                            tuple(kwargs.get("dynamic", ())), means, bool(kwargs.get("record", False)))
            task = self.executor.submit(build_and_score, recipe, shared=self.job(model), label="auto variant")
            self.pending[key] = (task, (model, kwargs["cal"]))
            self.submitted += 1

    def take(self, key: tuple) -> tuple[Any, Any, dict[str, Any]] | None:
        """The worker's (score, bytes or None, facts) for ``key``, waiting for it; None where it
        was not submitted."""
        pending = self.pending.pop(key, None)
        if pending is None:
            return None
        self.taken += 1
        return pending[0].result()

    def close(self) -> None:
        for pending, _ in self.pending.values():
            pending.cancel()
        self.pending.clear()
        if self.submitted:
            logger.info("auto: %d builds run ahead on the workers, %d of them used", self.submitted, self.taken)

    def job(self, model: Any) -> Any:
        """The float model, configuration and scoring feeds in the object store, once for all
        the builds from them."""
        from edgeq.auto.remote import BenchJob

        bench = self.search.bench
        key = (id(model), id(bench.config), id(bench.feeds))
        if key not in self.jobs:
            while len(self.jobs) >= MAX_JOBS:
                self.jobs.pop(next(iter(self.jobs)))
            self.jobs[key] = ((model, bench.config, bench.feeds), self.executor.share(BenchJob.of(bench, model, None)))
        return self.jobs[key][1]

    def means(self, cal: Any) -> dict[str, Any]:
        """``cal``'s channel means (bias correction), taken once per calibration."""
        from edgeq.auto.repairs import channel_means

        if self._means is None or self._means[0] is not cal:
            self._means = (cal, channel_means(cal))
        return self._means[1]
