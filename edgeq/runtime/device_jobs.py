"""``edgeq bench`` and ``edgeq compare`` on a cluster node that holds a device (``--device KIND``).

    report = run_on_device(executor, "bench", models, {"threads": [1], ...}, device="rpi4", timeout_s=1800)

A device farm's rules: a job runs on a node started with the custom resource ``device:KIND``
(``ray start --num-cpus 0 --resources '{"device:rpi4": 1}'``: no CPUs offered, so no other work
lands there while it measures), which holds one unit, so one job per device runs at a time and
the rest queue; the job itself holds no CPU, only the device; the models and the input data go with the job (the node may not
share a file system), are written to a temporary folder there and measured as on this machine:
each configuration in a fresh process, recording the cold start (session creation), the first
run and the warm loop (median, percentiles, spread). The result names the node. A job past
``timeout_s``, or whose node left, is reported (``cluster.RayExecutor.map``), never half-written.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from edgeq.errors import UsageError

__all__ = ["DeviceJob", "run_on_device", "run_device_job", "node_facts"]


@dataclasses.dataclass(frozen=True)
class DeviceJob:
    command: str  # "bench" or "compare"
    models: tuple[tuple[str, bytes], ...]  # (the path given here, the model with its weights inside)
    inputs: tuple[tuple[str, bytes], ...] | None  # (file name, bytes): one .npz/.npy file or a folder's files
    inputs_is_dir: bool
    options: dict[str, Any]


def _model_bytes(path: str) -> bytes:
    import onnx

    model = onnx.load(path)  # external data read in (from the model's folder)
    if model.ByteSize() >= 2**31:
        raise UsageError(f"{path} is 2 GB or more with its weights: it cannot be sent to a device node yet")
    return model.SerializeToString()


def _inputs(path: str | None) -> tuple[tuple[tuple[str, bytes], ...] | None, bool]:
    if path is None:
        return None, False
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n)))
        return tuple((n, open(os.path.join(path, n), "rb").read()) for n in names), True
    return ((os.path.basename(path), open(path, "rb").read()),), False


def node_facts() -> dict[str, Any]:
    """Where a job ran: host name, platform, CPU count and model."""
    import platform

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"node": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count(), "cpu": cpu}


def run_device_job(_: Any, job: DeviceJob) -> dict[str, Any]:
    """On the device node: the job's files written to a temporary folder and measured there."""
    with tempfile.TemporaryDirectory(prefix="edgeq-device-") as folder:
        paths = []
        for i, (_, data) in enumerate(job.models):
            paths.append(os.path.join(folder, f"model{i}.onnx"))
            with open(paths[-1], "wb") as f:
                f.write(data)
        inputs = None
        if job.inputs is not None:
            base = os.path.join(folder, "inputs") if job.inputs_is_dir else folder
            os.makedirs(base, exist_ok=True)
            for name, data in job.inputs:
                with open(os.path.join(base, name), "wb") as f:
                    f.write(data)
            inputs = base if job.inputs_is_dir else os.path.join(folder, job.inputs[0][0])
        names = dict(zip(paths, (p for p, _ in job.models)))
        if job.command == "bench":
            from edgeq.runtime.bench import bench

            results = bench(paths, inputs=inputs, **job.options)
            out: dict[str, Any] = {"results": [dataclasses.replace(r, model=names[r.model]).to_dict() for r in results]}
        else:
            from edgeq.runtime.compare import compare

            report = compare(paths, inputs=inputs, **job.options).to_dict()
            out = {"report": _renamed(report, names)}
    out["device_node"] = node_facts()
    return out


def _renamed(value: Any, names: dict[str, str]) -> Any:
    """``value`` with the temporary model paths replaced by the paths given here."""
    if isinstance(value, str):
        for tmp, given in names.items():
            value = value.replace(tmp, given)
        return value
    if isinstance(value, dict):
        return {_renamed(k, names): _renamed(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, names) for v in value]
    return value


def run_on_device(executor: Any, command: str, models: Sequence[str], options: dict[str, Any], *,
                  inputs: str | None, device: str, timeout_s: float) -> dict[str, Any]:
    """One ``command`` job on a node holding ``device:DEVICE`` (module docstring)."""
    from edgeq.runtime.session import check_model_file

    if not executor.distributed:
        raise UsageError("--device needs --cluster (the Ray cluster whose nodes hold the devices)")
    for model in models:
        check_model_file(model)
    files, is_dir = _inputs(inputs)
    job = DeviceJob(command, tuple((m, _model_bytes(m)) for m in models), files, is_dir, dict(options))
    [result] = executor.map(run_device_job, [job], resources={f"device:{device}": 1}, timeout_s=timeout_s,
                            retries=1, label=f"{command} on device:{device}", cpus=0)  # the device unit alone
    result["device_node"]["device"] = device
    return result
