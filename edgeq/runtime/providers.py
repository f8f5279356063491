"""Execution providers: loose names, typed options, and the ordered chain with fallback.

Names match loosely and case-insensitively: ``cpu``, ``cuda``, ``trt``/``tensorrt``, ``dml``,
``coreml``, ``openvino`` ... or onnxruntime's full names (``CUDAExecutionProvider``). A chain entry
is either a name or one of the typed options below, whose ``provider`` says which provider it
configures::

    Session("m.onnx", providers=(TensorRTOptions(fp16=True), CUDAOptions(), "cpu"))

``resolve_chain`` keeps the requested order, skips providers that this onnxruntime build does not
offer (with a logged warning), and raises ProviderError when none of them is available.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from typing import Any, Literal

from edgeq.errors import ProviderError, UsageError

__all__ = [
    "CPUOptions",
    "CUDAOptions",
    "TensorRTOptions",
    "ProviderOptions",
    "ProviderEntry",
    "ALIASES",
    "canonical_name",
    "resolve_chain",
    "available_providers",
]

logger = logging.getLogger(__name__)

# Short names users type -> onnxruntime's provider names.
ALIASES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "gpu": "CUDAExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "ov": "OpenVINOExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "dnnl": "DnnlExecutionProvider",
    "onednn": "DnnlExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
    "cann": "CANNExecutionProvider",
    "vitisai": "VitisAIExecutionProvider",
    "azure": "AzureExecutionProvider",
}

_GRAPH_OPT = ("disable", "basic", "extended", "all")
_EXEC_MODE = ("sequential", "parallel")
_CONV_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")


def _ort():
    import onnxruntime as ort

    return ort


def available_providers() -> list[str]:
    """Providers this onnxruntime build can run here (``ort.get_available_providers()``)."""
    return list(_ort().get_available_providers())


def _known_names() -> list[str]:
    names = set(ALIASES.values())
    try:
        names.update(_ort().get_all_providers())
    except Exception:  # pragma: no cover - very old onnxruntime
        pass
    return sorted(names)


def canonical_name(name: str) -> str:
    """``"trt"`` -> ``"TensorrtExecutionProvider"``; unknown names raise ProviderError."""
    key = name.strip()
    low = key.lower()
    if low in ALIASES:
        return ALIASES[low]
    for full in _known_names():
        if low in (full.lower(), full.lower().removesuffix("executionprovider")):
            return full
    short = sorted(ALIASES)
    raise ProviderError(
        f"unknown execution provider {name!r}: use one of {', '.join(short)} "
        f"or an onnxruntime name such as CUDAExecutionProvider"
    )


def _check_threads(value: int | None, field: str) -> None:
    if value is not None and (not isinstance(value, int) or value < 0):
        raise UsageError(f"{field} must be a non-negative integer (0 = onnxruntime's default), got {value!r}")


@dataclasses.dataclass(frozen=True)
class CPUOptions:
    """CPU provider and session settings: threads, memory arena, graph optimization level."""

    threads: int | None = None
    inter_threads: int | None = None
    arena: bool = True
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    execution_mode: Literal["sequential", "parallel"] = "sequential"

    provider = "CPUExecutionProvider"

    def __post_init__(self) -> None:
        _check_threads(self.threads, "CPUOptions.threads")
        _check_threads(self.inter_threads, "CPUOptions.inter_threads")
        if self.graph_optimization not in _GRAPH_OPT:
            raise UsageError(
                f"graph_optimization {self.graph_optimization!r} is not one of {', '.join(_GRAPH_OPT)}"
            )
        if self.execution_mode not in _EXEC_MODE:
            raise UsageError(f"execution_mode {self.execution_mode!r} is not one of {', '.join(_EXEC_MODE)}")

    def to_ort(self) -> dict[str, str]:
        """Provider options for onnxruntime (the CPU provider's own: the arena)."""
        return {"use_arena": "1" if self.arena else "0"}

    def apply(self, so: Any) -> None:
        """Set the session-wide parts on an ``onnxruntime.SessionOptions``."""
        ort = _ort()
        if self.threads is not None:
            so.intra_op_num_threads = self.threads
        if self.inter_threads is not None:
            so.inter_op_num_threads = self.inter_threads
        so.enable_cpu_mem_arena = self.arena
        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        so.graph_optimization_level = levels[self.graph_optimization]
        so.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL
            if self.execution_mode == "parallel"
            else ort.ExecutionMode.ORT_SEQUENTIAL
        )


@dataclasses.dataclass(frozen=True)
class CUDAOptions:
    """CUDA provider options. ``use_io_binding`` makes Session.run bind inputs and outputs.

    ``use_tf32`` (onnxruntime's default: on) runs fp32 Conv/MatMul in TF32 on Ampere and newer:
    faster, but only ~10 mantissa bits; turn it off to compare fp32 outputs against the CPU.
    """

    device_id: int = 0
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = "EXHAUSTIVE"
    use_io_binding: bool = False
    enable_cuda_graph: bool = False
    use_tf32: bool = True

    provider = "CUDAExecutionProvider"

    def __post_init__(self) -> None:
        if not isinstance(self.device_id, int) or self.device_id < 0:
            raise UsageError(f"CUDAOptions.device_id must be a GPU index >= 0, got {self.device_id!r}")
        if self.cudnn_conv_algo_search not in _CONV_SEARCH:
            raise UsageError(
                f"cudnn_conv_algo_search {self.cudnn_conv_algo_search!r} is not one of "
                f"{', '.join(_CONV_SEARCH)}"
            )
        if self.enable_cuda_graph and not self.use_io_binding:
            raise UsageError("CUDA graphs need IO binding: set use_io_binding=True with enable_cuda_graph")

    def to_ort(self) -> dict[str, str]:
        return {
            "device_id": str(self.device_id),
            "cudnn_conv_algo_search": self.cudnn_conv_algo_search,
            "enable_cuda_graph": "1" if self.enable_cuda_graph else "0",
            "use_tf32": "1" if self.use_tf32 else "0",
        }


@dataclasses.dataclass(frozen=True)
class TensorRTOptions:
    """TensorRT provider options; an int8 calibration cache (TensorRT's table) may be given."""

    fp16: bool = False
    int8: bool = False
    engine_cache_dir: str | None = None
    timing_cache_dir: str | None = None
    workspace_bytes: int | None = None
    int8_calibration_cache: str | None = None
    device_id: int = 0

    provider = "TensorrtExecutionProvider"

    def __post_init__(self) -> None:
        if self.workspace_bytes is not None and (
            not isinstance(self.workspace_bytes, int) or self.workspace_bytes <= 0
        ):
            raise UsageError(f"TensorRTOptions.workspace_bytes must be a positive integer, got {self.workspace_bytes!r}")
        if self.int8_calibration_cache is not None and not self.int8:
            raise UsageError("an int8 calibration cache was given without int8=True: set int8=True")

    def to_ort(self) -> dict[str, str]:
        opts = {
            "device_id": str(self.device_id),
            "trt_fp16_enable": "1" if self.fp16 else "0",
            "trt_int8_enable": "1" if self.int8 else "0",
        }
        if self.engine_cache_dir:
            opts["trt_engine_cache_enable"] = "1"
            opts["trt_engine_cache_path"] = os.fspath(self.engine_cache_dir)
        if self.timing_cache_dir:
            opts["trt_timing_cache_enable"] = "1"
            opts["trt_timing_cache_path"] = os.fspath(self.timing_cache_dir)
        if self.workspace_bytes:
            opts["trt_max_workspace_size"] = str(self.workspace_bytes)
        if self.int8_calibration_cache:
            # onnxruntime looks the table up by name inside the engine cache folder; a table
            # written by edgeq (or TensorRT itself) is in TensorRT's native format.
            cache = os.fspath(self.int8_calibration_cache)
            opts["trt_int8_calibration_table_name"] = os.path.basename(cache)
            opts["trt_int8_use_native_calibration_table"] = "1"
            folder = os.path.dirname(cache)
            if folder and "trt_engine_cache_path" not in opts:
                opts["trt_engine_cache_path"] = folder
        return opts


ProviderOptions = CPUOptions | CUDAOptions | TensorRTOptions
ProviderEntry = str | CPUOptions | CUDAOptions | TensorRTOptions


def resolve_chain(
    entries: Iterable[ProviderEntry] | str,
    available: Iterable[str] | None = None,
) -> list[tuple[str, dict[str, str]]]:
    """Ordered ``(ORT name, provider options)`` pairs that are available here.

    A comma-separated string is split (``"trt,cuda,cpu"``). Unknown names raise ProviderError at
    once; known but unavailable ones are skipped with a warning; an empty result raises
    ProviderError listing what is available.
    """
    if isinstance(entries, str):
        entries = [part for part in entries.split(",") if part.strip()]
    entries = list(entries)
    if not entries:
        raise ProviderError("no execution provider was requested: pass e.g. providers=('cpu',)")
    avail = list(available) if available is not None else available_providers()
    chain: list[tuple[str, dict[str, str]]] = []
    skipped: list[str] = []
    for entry in entries:
        if isinstance(entry, str):
            name, opts = canonical_name(entry), {}
        elif isinstance(entry, (CPUOptions, CUDAOptions, TensorRTOptions)):
            name, opts = entry.provider, entry.to_ort()
        else:
            raise ProviderError(
                f"provider entry {entry!r} is neither a name nor CPUOptions/CUDAOptions/TensorRTOptions"
            )
        if any(name == done for done, _ in chain):
            continue
        if name not in avail:
            skipped.append(name)
            continue
        chain.append((name, opts))
    if not chain:
        raise ProviderError(
            f"none of the requested providers ({', '.join(skipped)}) is available in this "
            f"onnxruntime build; available: {', '.join(avail)} (for CUDA/TensorRT install "
            "onnxruntime-gpu: pip install 'edgeq[gpu]')"
        )
    for name in skipped:
        logger.warning(
            "execution provider %s is not available here; skipping it (available: %s)", name, ", ".join(avail)
        )
    return chain
