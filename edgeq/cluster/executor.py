"""The executor contract and the serial executor (the default).

    results = executor.map(fn, items, shared=value)   # [fn(value, item) for item in items], in order

1. ``fn`` is a module-level function ``fn(shared, item) -> result`` (a worker imports it by name);
   ``shared`` is what every item needs (a model's bytes, the feeds): a distributed executor puts
   it in the object store once per ``map`` (or once per ``share`` for several maps), never once
   per task.
2. Results come back in the order of ``items``, whatever order they finish in, so a caller that
   folds them (merges histograms, keeps the best score) does so exactly as the serial loop did:
   the result is the same bytes.
3. A task that raises an edgeq error raises that error here; a task whose worker died is run
   again (``retries``) and, if it dies every time, or runs past ``timeout_s``, the map raises
   ``ClusterError`` naming the task: no result is lost or silently left out.
4. ``cpus``: the CPUs each task holds (a device job holds none: its device resource alone keeps
   it exclusive, on a node started with ``--num-cpus 0`` so that no other work lands there).
5. ``pending = executor.submit(fn, item, shared=value)`` starts one task and returns at once;
   ``pending.result()`` waits for it (errors and retries as in 3), ``pending.cancel()`` drops it.
   Auto's search runs ahead with it (``auto/ahead.py``); on the serial executor the task runs
   when its result is first asked for.
6. ``worker_cache(key, build)``: what a worker builds from ``shared`` (a deserialized model, its
   sessions) kept for the next task of the same map on that worker (two entries at most).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["Executor", "Pending", "Shared", "current", "using", "worker_cache"]

_CURRENT: contextvars.ContextVar[Executor | None] = contextvars.ContextVar("edgeq_executor", default=None)
_CACHE: dict[str, Any] = {}
_CACHE_ENTRIES = 2


class Shared:
    """A value put once where every task of one or more maps reads it (``Executor.share``)."""

    def __init__(self, value: Any, handle: Any = None) -> None:
        self.value = value
        self.handle = handle  # a Ray ObjectRef on a Ray executor


class Executor:
    """Runs ``fn(shared, item)`` for each item here, in order (the default executor)."""

    distributed = False
    width = 1  # tasks that run at once
    address = "serial"

    def share(self, value: Any) -> Shared:
        return value if isinstance(value, Shared) else Shared(value)

    def map(self, fn: Callable[[Any, Any], Any], items: Sequence[Any], *, shared: Any = None,
            timeout_s: float | None = None, resources: dict[str, float] | None = None,
            retries: int = 2, label: str = "task", on_result: Callable[[int, Any], None] | None = None,
            cpus: float = 1) -> list[Any]:
        value = shared.value if isinstance(shared, Shared) else shared
        out = []
        for index, item in enumerate(items):
            out.append(fn(value, item))
            if on_result is not None:
                on_result(index, out[-1])
        return out

    def submit(self, fn: Callable[[Any, Any], Any], item: Any, *, shared: Any = None, retries: int = 2,
               label: str = "task", cpus: float = 1) -> Pending:
        value = shared.value if isinstance(shared, Shared) else shared
        return Pending(lambda: fn(value, item))


class Pending:
    """One submitted task (``Executor.submit``): ``result()`` waits for it, ``cancel()`` drops it."""

    def __init__(self, run: Callable[[], Any], cancel: Callable[[], None] | None = None) -> None:
        self._run, self._cancel, self._done, self._value = run, cancel, False, None

    def result(self) -> Any:
        if not self._done:
            self._value, self._done = self._run(), True
        return self._value

    def cancel(self) -> None:
        if not self._done and self._cancel is not None:
            self._cancel()
        self._done = True


_SERIAL = Executor()


def current() -> Executor:
    """The executor opened by the innermost ``using`` (the serial one outside any)."""
    return _CURRENT.get() or _SERIAL


@contextlib.contextmanager
def using(executor: Executor | None) -> Iterator[Executor]:
    """Make ``executor`` the current one inside the block (``None``: the serial executor)."""
    token = _CURRENT.set(executor)
    try:
        yield current()
    finally:
        _CURRENT.reset(token)


def worker_cache(key: str, build: Callable[[], Any]) -> Any:
    """``build()`` once per ``key`` in this process (a Ray worker runs many tasks of one map)."""
    if key not in _CACHE:
        while len(_CACHE) >= _CACHE_ENTRIES:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = build()
    return _CACHE[key]
