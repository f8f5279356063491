"""The ``vad`` model's ONNX graph: an ``If`` on the sample rate, built from the checkpoint without torch.

torch.onnx traces Python control flow on a tensor's value as the one branch it took, so the
graph is written here with ``onnx.helper``, the way VAD models shipped in the wild look (opset 16)::

    sr ─▶ Equal(16000) ─▶ If ─┬─ then (16 kHz): Unsqueeze ─▶ Conv(k128, s64) ─▶ Abs ─▶ Add(eps) ─▶ Log
    input, state (outer scope)│     ─▶ Conv(k3) ─▶ Relu ─▶ ReduceMean ─▶ Unsqueeze ─▶ LSTM ◀─ Split(state)
                              │     LSTM.Y_h ─▶ Squeeze ─▶ MatMul ─▶ Add ─▶ Sigmoid ─▶ output
                              │     Concat(Y_h, Y_c) ─▶ stateN
                              └─ else (8 kHz): the same with Conv(k64, s32)

Each branch is self-contained: its weights are its own initializers (the shared encoder, LSTM
and head stored in both), its inputs the outer scope's ``input`` and ``state``. The LSTM gates
are reordered from torch's (i, f, g, o) to ONNX's (i, o, f, c).

``read_checkpoint`` reads the state_dict that ``torch.save`` wrote (a zip: a pickle of
``_rebuild_tensor_v2`` calls plus raw little-endian storages) into numpy arrays with a restricted
unpickler that accepts float tensors in an OrderedDict and nothing else, as ``weights_only`` does.
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["CHECKPOINT", "OPSET", "read_checkpoint", "build_model"]

CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints", "vad.pt")
OPSET = 16
_LOG_EPS = 1e-3  # vad.LOG_EPS
_FRONTEND = {16000: "frontend16", 8000: "frontend8"}


def _rebuild(storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_) -> np.ndarray:
    view = np.lib.stride_tricks.as_strided(storage[offset:], size, [s * storage.itemsize for s in stride])
    return np.array(view)


def read_checkpoint(path: str | None = None) -> dict[str, np.ndarray]:
    """The float32 state_dict of ``vad.pt`` (default: the committed checkpoint) as numpy arrays."""
    path = path or CHECKPOINT
    allowed = {("collections", "OrderedDict"): collections.OrderedDict,
               ("torch._utils", "_rebuild_tensor_v2"): _rebuild, ("torch", "FloatStorage"): np.float32}
    with zipfile.ZipFile(path) as archive:
        pkl = next(name for name in archive.namelist() if name.endswith("data.pkl"))
        root = pkl[: -len("data.pkl")]

        class _Weights(pickle.Unpickler):
            def find_class(self, module: str, name: str):
                if (module, name) not in allowed:
                    raise pickle.UnpicklingError(f"{path}: {module}.{name} is not allowed in the vad checkpoint")
                return allowed[(module, name)]

            def persistent_load(self, pid):
                _, dtype, key, _, numel = pid
                return np.frombuffer(archive.read(f"{root}data/{key}"), np.dtype(dtype).newbyteorder("<"), numel)

        state = _Weights(archive.open(pkl)).load()
    return {name: np.asarray(value, np.float32) for name, value in state.items()}


def _lstm_weights(w: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's LSTM weights (gates i, f, g, o) -> ONNX's W, R, B (gates i, o, f, c)."""
    def reorder(a: np.ndarray) -> np.ndarray:
        i, f, g, o = np.split(a, 4)
        return np.concatenate([i, o, f, g])

    bias = np.concatenate([reorder(w["lstm.bias_ih_l0"]), reorder(w["lstm.bias_hh_l0"])])
    return reorder(w["lstm.weight_ih_l0"])[None], reorder(w["lstm.weight_hh_l0"])[None], bias[None]


def _branch(w: Mapping[str, np.ndarray], sr: int) -> onnx.GraphProto:
    """Front-end of rate ``sr`` + LSTM + head, reading ``input`` and ``state`` from the outer scope."""
    p = f"vad{sr // 1000}k/"  # node and value names unique across the two branches
    frontend = w[f"{_FRONTEND[sr]}.weight"]
    kernel, stride = frontend.shape[2], frontend.shape[2] // 2
    lstm_w, lstm_r, lstm_b = _lstm_weights(w)
    hidden = lstm_r.shape[2]
    tensors = {
        "frontend.weight": frontend, "frontend.bias": w[f"{_FRONTEND[sr]}.bias"],
        "encoder.weight": w["encoder.weight"], "encoder.bias": w["encoder.bias"],
        "lstm.W": lstm_w, "lstm.R": lstm_r, "lstm.B": lstm_b,
        "head.weight": w["head.weight"].T.copy(), "head.bias": w["head.bias"],
        "eps": np.array(_LOG_EPS, np.float32),
        "axis0": np.array([0], np.int64), "axis1": np.array([1], np.int64),
    }
    inits = [numpy_helper.from_array(np.asarray(v, np.float32 if v.dtype.kind == "f" else v.dtype), p + k)
             for k, v in tensors.items()]

    def node(op: str, inputs: list[str], outputs: list[str], **attrs) -> onnx.NodeProto:
        def full(name: str) -> str:
            return name if name in ("input", "state", "") else p + name
        return helper.make_node(op, [full(i) for i in inputs], [full(o) for o in outputs], name=p + outputs[0], **attrs)

    nodes = [
        node("Unsqueeze", ["input", "axis1"], ["audio"]),
        node("Conv", ["audio", "frontend.weight", "frontend.bias"], ["filterbank"], kernel_shape=[kernel], strides=[stride]),
        node("Abs", ["filterbank"], ["magnitude"]),
        node("Add", ["magnitude", "eps"], ["magnitude_eps"]),
        node("Log", ["magnitude_eps"], ["log_bands"]),
        node("Conv", ["log_bands", "encoder.weight", "encoder.bias"], ["encoded"], kernel_shape=[3], pads=[1, 1]),
        node("Relu", ["encoded"], ["encoded_relu"]),
        node("ReduceMean", ["encoded_relu"], ["features"], axes=[2], keepdims=0),
        node("Unsqueeze", ["features", "axis0"], ["lstm_x"]),
        node("Split", ["state"], ["h0", "c0"], axis=0),
        node("LSTM", ["lstm_x", "lstm.W", "lstm.R", "lstm.B", "", "h0", "c0"], ["lstm_y", "h1", "c1"], hidden_size=hidden),
        node("Concat", ["h1", "c1"], ["stateN"], axis=0),
        node("Squeeze", ["h1", "axis0"], ["h1_2d"]),
        node("MatMul", ["h1_2d", "head.weight"], ["logit_mm"]),
        node("Add", ["logit_mm", "head.bias"], ["logit"]),
        node("Sigmoid", ["logit"], ["output"]),
    ]
    outputs = [helper.make_tensor_value_info(p + "output", TensorProto.FLOAT, ["batch", 1]),
               helper.make_tensor_value_info(p + "stateN", TensorProto.FLOAT, [2, "batch", hidden])]
    return helper.make_graph(nodes, f"vad_{sr // 1000}khz", [], outputs, initializer=inits)


def build_model(weights: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """The ONNX model of ``weights`` (default: the committed checkpoint), checked by onnx.checker."""
    w = read_checkpoint() if weights is None else weights
    hidden = w["lstm.weight_hh_l0"].shape[1]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "samples"]),
              helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", hidden]),
              helper.make_tensor_value_info("sr", TensorProto.INT64, [])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1]),
               helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", hidden])]
    nodes = [
        helper.make_node("Constant", [], ["sr_16k"], name="sr_16k", value=numpy_helper.from_array(np.array(16000, np.int64))),
        helper.make_node("Equal", ["sr", "sr_16k"], ["is_16k"], name="is_16k"),
        helper.make_node("If", ["is_16k"], ["output", "stateN"], name="rate",
                         then_branch=_branch(w, 16000), else_branch=_branch(w, 8000)),
    ]
    graph = helper.make_graph(nodes, "vad", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgeq.zoo.vad_graph")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
