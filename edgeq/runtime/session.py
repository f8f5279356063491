"""``Session``: a lazy onnxruntime session with provider fallback and feed checks.

    sess = Session("model.onnx", providers=("trt", "cuda", "cpu"), threads=2)
    outputs = sess.run({"x": x})          # dict: output name -> np.ndarray
    sess.providers                        # what onnxruntime actually used, e.g. ["CPUExecutionProvider"]

The onnxruntime session is built on first use (``run``, ``input_specs``, ``providers``), once
even when several threads ask at once. One Session may be run from many threads (onnxruntime's
``run`` is thread-safe); CUDA-graph runs, which replay one set of device buffers, take turns. Load
failures of the model file become one-line ModelLoadError (or UnsupportedError for an operator
onnxruntime has no kernel for).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from edgeq.errors import EdgeqError, InputError, ModelLoadError, UnsupportedError, one_line
from edgeq.runtime.feeds import TensorSpec, check_feeds, spec_from_node_arg
from edgeq.runtime.memory import InMemoryModel, in_memory, inference_session
from edgeq.runtime.providers import CPUOptions, CUDAOptions, ProviderEntry, resolve_chain

__all__ = ["Session", "model_label", "check_model_file"]

logger = logging.getLogger(__name__)


def model_label(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    return "the in-memory model"


def check_model_file(path: str) -> None:
    """Missing, folder, empty or not-regular model files, and external data leaving the model's
    folder -> ModelLoadError naming the path and the fix (``edgeq.io.check_model_path``)."""
    from edgeq.io import check_model_path

    check_model_path(path)


def _first_line(error: BaseException) -> str:
    return re.sub(r"^Load model from .* failed:", "", one_line(error)).strip()


_PRELOADED = False


def _preload_gpu_libraries(ort: Any) -> None:
    """onnxruntime-gpu >= 1.21: load CUDA/cuDNN from the nvidia-* pip packages when present."""
    global _PRELOADED
    if _PRELOADED or not hasattr(ort, "preload_dlls"):
        return
    _PRELOADED = True
    try:
        ort.preload_dlls(msvc=False)
    except Exception as e:  # libraries may come from the system instead
        logger.debug("onnxruntime.preload_dlls failed: %s", e)


class Session:
    """An onnxruntime session built on first use.

    ``model``: path, bytes, ``onnx.ModelProto``, ``InMemoryModel`` (or an ``onnx_ir.Model`` a
    caller already holds: its weights go to onnxruntime uncopied). A path keeps its external
    data beside it, from any working directory. ``providers``: ordered names or typed options
    (see ``edgeq.runtime.providers``); unavailable ones are skipped with a warning. ``threads``
    sets intra-op threads (overrides ``CPUOptions.threads``).
    """

    def __init__(
        self,
        model: str | os.PathLike | bytes | Any,
        providers: Sequence[ProviderEntry] | str = ("cpu",),
        threads: int | None = None,
        *,
        cpu_options: CPUOptions | None = None,
        log_level: int = 4,  # fatal only: an error reaches the user once, as edgeq's one line
        profile_prefix: str | None = None,
    ) -> None:
        if isinstance(model, os.PathLike):
            model = os.fspath(model)
        if isinstance(model, str):
            check_model_file(model)
        elif not isinstance(model, (bytes, InMemoryModel)):
            if type(model).__module__.startswith("onnx_ir"):
                # Only when the caller already holds an onnx_ir.Model, so the import is free.
                model = in_memory(model)
            elif not hasattr(model, "SerializeToString"):
                raise ModelLoadError(
                    f"Session takes a model path, bytes or onnx.ModelProto, not {type(model).__name__}"
                )
        self._model = model
        self.label = model_label(model)
        # Resolve names now so that typos fail early, before the (lazy) session is built.
        self._chain = resolve_chain(providers)
        entries = [providers] if isinstance(providers, str) else list(providers)
        cpu = cpu_options or next((e for e in entries if isinstance(e, CPUOptions)), None) or CPUOptions()
        if threads is not None:
            cpu = CPUOptions(
                threads=threads,
                inter_threads=cpu.inter_threads,
                arena=cpu.arena,
                graph_optimization=cpu.graph_optimization,
                execution_mode=cpu.execution_mode,
            )
        self.cpu_options = cpu
        self.cuda_options = next((e for e in entries if isinstance(e, CUDAOptions)), None)
        self.log_level = log_level
        self.profile_prefix = profile_prefix
        self._sess: Any = None
        self._graph: Any = None  # CUDA graph: (io binding, input and output device buffers)
        self._lock = threading.RLock()  # one build; CUDA-graph runs one at a time
        self.start_seconds: float | None = None
        self.warnings: list[str] = []  # what the build found worth saying (also logged)

    # -- building -------------------------------------------------------------------------------
    def _build(self) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        self.cpu_options.apply(so)
        so.log_severity_level = self.log_level
        if self.profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = self.profile_prefix
        ort.set_default_logger_severity(self.log_level)
        model = self._model
        if not isinstance(model, (str, bytes, InMemoryModel)):
            model = model.SerializeToString()
        names = [name for name, _ in self._chain]
        options = [opts for _, opts in self._chain]
        if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(names):
            _preload_gpu_libraries(ort)
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():  # onnxruntime warns of missing providers; we log it below
                warnings.simplefilter("ignore", UserWarning)
                sess = inference_session(model, so, names, options)
        except Exception as e:  # onnxruntime raises its own pybind exception types
            kind = type(e).__name__
            line = _first_line(e)
            if kind == "NotImplemented" or "Could not find an implementation" in line:
                raise UnsupportedError(
                    f"onnxruntime cannot run {self.label}: {line}: use a supported opset/operator "
                    "or another provider"
                ) from None
            if "Load model" in line or kind in ("InvalidProtobuf", "InvalidArgument") or "Protobuf" in line:
                raise ModelLoadError(
                    f"model {self.label} is not a valid ONNX model ({line}): it may be truncated "
                    "or corrupt; re-export it"
                ) from None
            raise ModelLoadError(f"onnxruntime cannot load {self.label}: {line}") from None
        self.start_seconds = time.perf_counter() - start
        used = sess.get_providers()
        for name in names:
            if name not in used:
                logger.warning("provider %s could not be used for %s; fell back to %s", name, self.label, used)
        if isinstance(self._model, str) and "CPUExecutionProvider" in used[:1]:
            from edgeq.runtime.cpu import saturation_warning

            warning = saturation_warning(self._model)  # 8-bit weights where this CPU saturates them
            if warning:
                self.warnings.append(warning)
                logger.warning("%s", warning)
        return sess

    @property
    def ort_session(self) -> Any:
        """The underlying ``onnxruntime.InferenceSession`` (built on first access)."""
        if self._sess is None:
            with self._lock:
                if self._sess is None:
                    self._sess = self._build()
        return self._sess

    # -- metadata -------------------------------------------------------------------------------
    @property
    def providers(self) -> list[str]:
        """Providers onnxruntime actually uses for this model, in priority order."""
        return list(self.ort_session.get_providers())

    @property
    def requested_providers(self) -> list[str]:
        return [name for name, _ in self._chain]

    @property
    def input_specs(self) -> list[TensorSpec]:
        return [spec_from_node_arg(a) for a in self.ort_session.get_inputs()]

    @property
    def output_specs(self) -> list[TensorSpec]:
        return [spec_from_node_arg(a) for a in self.ort_session.get_outputs()]

    # -- running --------------------------------------------------------------------------------
    def check(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Check feeds against the model's inputs; return them as arrays."""
        return check_feeds(feeds, self.input_specs, where=self.label)

    def run(self, feeds: Mapping[str, Any], outputs: Iterable[str] | None = None, *, checked: bool = False) -> dict[str, np.ndarray]:
        """Run on ``feeds`` (checked first unless ``checked``); return ``{output name: array}``."""
        sess = self.ort_session
        arrays = dict(feeds) if checked else self.check(feeds)
        names = list(outputs) if outputs is not None else [o.name for o in sess.get_outputs()]
        known = {o.name for o in sess.get_outputs()}
        bad = [n for n in names if n not in known]
        if bad:
            raise InputError(
                f"unknown output name(s) {', '.join(map(repr, bad))} for {self.label}: it has "
                f"{', '.join(map(repr, sorted(known)))}"
            )
        try:
            on_cuda = self.cuda_options is not None and "CUDAExecutionProvider" in sess.get_providers()
            if on_cuda and self.cuda_options.enable_cuda_graph:
                with self._lock:  # the graph's input and output buffers are shared
                    values = self._run_cuda_graph(sess, arrays, names)
            elif on_cuda and self.cuda_options.use_io_binding:
                values = self._run_io_binding(sess, arrays, names)
            else:
                values = sess.run(names, arrays)
        except EdgeqError:
            raise
        except Exception as e:
            raise EdgeqError(
                f"onnxruntime failed running {self.label}: {_first_line(e)}: check the input "
                "shapes against the model's"
            ) from None
        return dict(zip(names, values))

    def _run_io_binding(self, sess: Any, arrays: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
        binding = sess.io_binding()
        for name, array in arrays.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in names:
            binding.bind_output(name, "cuda", self.cuda_options.device_id)
        sess.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def _run_cuda_graph(self, sess: Any, arrays: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
        """CUDA graphs replay fixed device addresses: inputs and outputs live in device buffers
        made on the first run; later runs copy new inputs into them in place."""
        import onnxruntime as ort

        device = self.cuda_options.device_id
        if self._graph is None:
            symbols: dict[str, int] = {}
            for spec in self.input_specs:
                for want, got in zip(spec.shape or (), arrays[spec.name].shape):
                    if isinstance(want, str):
                        symbols[want] = got
            binding = sess.io_binding()
            inputs = {}
            for name, array in arrays.items():
                inputs[name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda", device)
                binding.bind_ortvalue_input(name, inputs[name])
            outputs = {}
            for spec in self.output_specs:
                shape = [symbols.get(d) if isinstance(d, str) else d for d in (spec.shape or [None])]
                if spec.shape is None or any(d is None for d in shape):
                    raise InputError(
                        f"output {spec.name!r} of {self.label} has shape {spec.shape} that the inputs do not "
                        "fix: CUDA graphs need static shapes; use enable_cuda_graph=False"
                    )
                outputs[spec.name] = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.dtype(spec.dtype), "cuda", device)
                binding.bind_ortvalue_output(spec.name, outputs[spec.name])
            self._graph = (binding, inputs, outputs)
        binding, inputs, outputs = self._graph
        for name, array in arrays.items():
            if tuple(inputs[name].shape()) != array.shape:
                raise InputError(
                    f"input {name!r} of {self.label} has shape {list(array.shape)} but the CUDA graph was "
                    f"captured for {inputs[name].shape()}: CUDA graphs replay one shape; make another Session"
                )
            inputs[name].update_inplace(np.ascontiguousarray(array))
        sess.run_with_iobinding(binding)
        return [outputs[name].numpy() for name in names]

    def end_profiling(self) -> str:
        """Stop onnxruntime's profiler (``profile_prefix`` given); return its trace file's path."""
        return self.ort_session.end_profiling()

    def __repr__(self) -> str:
        state = f"providers={self.providers}" if self._sess is not None else f"requested={self.requested_providers}"
        return f"Session({self.label!r}, {state})"
