"""The Ray executor: ``map`` as Ray tasks, results in order, faults retried or reported.

    executor = connect("local", workers=8)          # a Ray instance on this machine, 8 workers
    executor = connect("ray://head:10001")          # or "auto", or "HOST:PORT" of a running cluster

1. Connecting checks every live node: the same versions of edgeq, onnxruntime, onnx, onnx-ir and
   numpy as this process (a mismatch is a one-line error naming the node and the package: results
   would not be the same bytes), and pins the environment the caller gives (``env``: the CPU
   facts that decide how weights are rounded) in every worker.
2. ``map`` puts ``shared`` in the object store once, keeps at most ``width`` tasks in flight (so
   a caller's budget checks between maps stay meaningful and the object store stays small),
   gathers results in item order.
3. Faults: a worker or node that dies mid-task is a system failure Ray runs again, up to
   ``retries`` more times (on another node where one qualifies); a task that raised an edgeq
   error raises it here; one that died every time, or when no task finished within
   ``timeout_s``, ends the map with ``ClusterError`` naming the task (the other tasks are
   cancelled). ``resources`` (``{"device:rpi4": 1}``) that no node offers fail at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from edgeq.cluster.executor import Executor, Pending, Shared
from edgeq.errors import ClusterError, EdgeqError, UsageError

__all__ = ["RayExecutor", "connect", "PACKAGES"]

logger = logging.getLogger(__name__)

PACKAGES = ("edgeq", "onnxruntime", "onnx", "onnx-ir", "numpy")
INSTALL = "pip install 'edgeq[cluster]'"
_REMOTE: dict[str, Any] = {}


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(f"--cluster needs Ray, which is not installed: {INSTALL}") from None
    return ray


def _run(fn: Callable[[Any, Any], Any], shared: Any, item: Any) -> Any:
    return fn(shared, item)


def _versions() -> dict[str, str]:
    """What this process runs (on a worker: what that node runs)."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _remote(name: str, fn: Callable[..., Any]) -> Any:
    if name not in _REMOTE:
        _REMOTE[name] = _ray().remote(fn)
    return _REMOTE[name]


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) that takes no connection fails here in seconds, where Ray
    would retry for minutes."""
    import socket

    if address in ("local", "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--cluster {address!r} is not an address: give local, auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ClusterError(f"no Ray cluster answers at {address} ({error.strerror or error}): start one there with "
                           "`ray start --head`, or pass --cluster local") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class RayExecutor(Executor):
    """``map`` over Ray tasks on the cluster ``address`` (module docstring)."""

    distributed = True

    def __init__(self, address: str, width: int, started: bool) -> None:
        self.address = address
        self.width = max(1, int(width))
        self._started = started  # a local instance this executor started (closed with it)

    def share(self, value: Any) -> Shared:
        if isinstance(value, Shared) and value.handle is not None:
            return value
        value = value.value if isinstance(value, Shared) else value
        return Shared(value, _ray().put(value))

    def _check_resources(self, resources: dict[str, float]) -> None:
        offered = _ray().cluster_resources()
        for key, amount in resources.items():
            if offered.get(key, 0) < amount:
                raise ClusterError(f"no node of the cluster at {self.address} offers {key} (needed: {amount:g}): start "
                                   f"one with `ray start --address HEAD --resources '{{\"{key}\": 1}}'`")

    def map(self, fn: Callable[[Any, Any], Any], items: Sequence[Any], *, shared: Any = None,
            timeout_s: float | None = None, resources: dict[str, float] | None = None,
            retries: int = 2, label: str = "task", on_result: Callable[[int, Any], None] | None = None,
            cpus: float = 1) -> list[Any]:
        ray = _ray()
        items = list(items)
        if not items:
            return []
        if resources:
            self._check_resources(resources)
        handle = self.share(shared).handle
        task = _remote("run", _run).options(max_retries=retries, retry_exceptions=False, num_cpus=cpus,
                                            resources=dict(resources or {}))
        results: list[Any] = [None] * len(items)
        pending: dict[Any, int] = {}
        submitted = 0
        try:
            while submitted < len(items) or pending:
                while submitted < len(items) and len(pending) < self.width:
                    pending[task.remote(fn, handle, items[submitted])] = submitted
                    submitted += 1
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout_s)
                if not ready:
                    late = sorted(pending.values())
                    raise ClusterError(self._late(label, late, timeout_s, resources))
                for ref in ready:
                    index = pending.pop(ref)
                    results[index] = self._get(ray, ref, label, index, retries)
                    if on_result is not None:
                        on_result(index, results[index])
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
        return results

    def submit(self, fn: Callable[[Any, Any], Any], item: Any, *, shared: Any = None, retries: int = 2,
               label: str = "task", cpus: float = 1) -> Pending:
        ray = _ray()
        task = _remote("run", _run).options(max_retries=retries, retry_exceptions=False, num_cpus=cpus)
        ref = task.remote(fn, self.share(shared).handle, item)
        return Pending(lambda: self._get(ray, ref, label, 0, retries), lambda: ray.cancel(ref, force=False))

    def _late(self, label: str, late: list[int], timeout_s: float | None, resources: dict[str, float] | None) -> str:
        where = ""
        if resources:
            offered = _ray().cluster_resources()
            gone = [k for k in resources if offered.get(k, 0) < resources[k]]
            if gone:
                where = f"; no node offers {', '.join(gone)} any more (the node left the cluster)"
        return (f"{label} {late[0]} ran past its limit of {timeout_s:g} s on the cluster at {self.address}"
                f"{where}: {len(late)} task(s) cancelled, no result kept from them; raise the limit or check the node")

    def _get(self, ray: Any, ref: Any, label: str, index: int, retries: int) -> Any:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, EdgeqError):
                raise cause from None
            raise ClusterError(f"{label} {index} failed on a worker: {type(cause or error).__name__}: "
                               f"{_first_line(cause or error)}") from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError,
                ray.exceptions.TaskCancelledError) as error:
            raise ClusterError(f"{label} {index}: its worker died {retries + 1} time(s) ({type(error).__name__}); "
                               "no result kept from it: check the nodes' memory and logs (`ray status`)") from None

    def check_nodes(self, here: dict[str, str] | None = None) -> list[dict[str, str]]:
        """Every live node's versions against ``here`` (default: this process's; module docstring
        (1)); a mismatch raises ``ClusterError``."""
        ray = _ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = here or _versions()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        probe = _remote("versions", _versions)
        refs = [probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
                for n in nodes]
        found = []
        for node, ref in zip(nodes, refs):
            theirs = ray.get(ref, timeout=120)
            for key in PACKAGES:
                if theirs.get(key) != here.get(key):
                    raise ClusterError(f"node {node.get('NodeManagerAddress')} runs {key} {theirs.get(key)} where this "
                                       f"machine runs {here.get(key)}: install the same versions on every node "
                                       "(results are compared byte for byte)")
            found.append({"node": str(node.get("NodeManagerAddress")), **theirs})
        return found

    def close(self) -> None:
        if self._started:
            _ray().shutdown()
            self._started = False


def connect(address: str, *, workers: int | None = None, env: dict[str, str] | None = None) -> RayExecutor:
    """A ``RayExecutor`` on ``address``: ``local`` (a Ray instance started here, ``workers`` CPUs,
    default all), ``auto`` or a cluster's ``HOST:PORT`` / ``ray://HOST:PORT``. ``workers`` caps the
    tasks in flight (default: the cluster's CPUs). ``env`` is set in every worker."""
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    ray = _ray()
    if not ray.is_initialized():
        _check_reachable(address)
    logging.getLogger("ray").setLevel(logging.ERROR)  # its start-up notices are not the user's business
    runtime_env = {"env_vars": dict(env)} if env else None
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "runtime_env": runtime_env,
                                  "logging_level": logging.WARNING}
        try:
            if address == "local":
                ray.init(num_cpus=workers or os.cpu_count() or 1, **kwargs)
            else:
                ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ClusterError(f"cannot reach a Ray cluster at {address!r} ({_first_line(error)}): start one with "
                               "`ray start --head`, or pass --cluster local") from None
        started = True
    cpus = int(ray.cluster_resources().get("CPU", 1))
    executor = RayExecutor(address, workers or cpus, started)
    executor.check_nodes()
    logger.info("cluster %s: %d node(s), %d CPU(s), %d task(s) at once", address, len(ray.nodes()), cpus, executor.width)
    return executor
