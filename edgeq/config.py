"""Typed, frozen options. Every CLI option is one field; ``--config FILE`` sets them all.

Granularity is a type, not a string: ``PerTensor()``, ``PerChannel(axis=0)``, ``PerBlock(32)``
for weights; ``PerTensor()`` or ``PerToken()`` for activations quantized at run time.
Configs round-trip through JSON (``to_dict``/``from_dict``) and load from TOML or JSON files.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

from edgeq.errors import UnsupportedError, UsageError
from edgeq.files import regular_file

__all__ = [
    "MODES",
    "ModeSpec",
    "default_mode",
    "parse_size_target",
    "PerTensor",
    "PerChannel",
    "PerBlock",
    "PerToken",
    "Granularity",
    "QuantConfig",
    "parse_granularity",
    "NodePrecision",
    "PRECISIONS",
    "parse_precision",
    "load_config_file",
]


@dataclasses.dataclass(frozen=True)
class PerTensor:
    """One scale for the whole tensor."""

    def __str__(self) -> str:
        return "per-tensor"


@dataclasses.dataclass(frozen=True)
class PerChannel:
    """One scale per slice along ``axis`` (for weights: the output-channel axis, found per op
    when ``axis`` is None)."""

    axis: int | None = None

    def __str__(self) -> str:
        return "per-channel" if self.axis is None else f"per-channel:{self.axis}"


@dataclasses.dataclass(frozen=True)
class PerBlock:
    """One scale per block of ``size`` elements along the reduction axis (int4 weights)."""

    size: int = 32

    def __post_init__(self) -> None:
        if self.size < 1:
            raise UsageError(f"block size must be positive, got {self.size}")

    def __str__(self) -> str:
        return f"per-block:{self.size}"


@dataclasses.dataclass(frozen=True)
class PerToken:
    """Activations quantized at run time with one scale per row of a MatMul/Gemm input (each
    token of a transformer), computed in the graph (``passes/per_token.py``)."""

    def __str__(self) -> str:
        return "per-token"


Granularity = PerTensor | PerChannel | PerBlock | PerToken


def parse_granularity(text: str | Granularity) -> Granularity:
    """``per-tensor`` | ``per-channel`` | ``per-channel:AXIS`` | ``per-block:SIZE`` | ``per-token``."""
    if isinstance(text, (PerTensor, PerChannel, PerBlock, PerToken)):
        return text
    name, _, arg = str(text).strip().lower().replace("_", "-").partition(":")
    try:
        if name == "per-tensor" and not arg:
            return PerTensor()
        if name == "per-token" and not arg:
            return PerToken()
        if name == "per-channel":
            return PerChannel(int(arg)) if arg else PerChannel()
        if name == "per-block":
            return PerBlock(int(arg)) if arg else PerBlock()
    except ValueError:
        pass
    raise UsageError(
        f"unknown granularity {text!r}: use per-tensor, per-channel[:AXIS], per-block[:SIZE] or per-token"
    )


@dataclasses.dataclass(frozen=True)
class ModeSpec:
    """One row of the mode table.

    ``handler``: ``"module:function"`` with the signature of ``edgeq.quantize`` (model, config,
    data, eval_data=, labels=, ranges=, progress=) returning a ``QuantResult``; resolved by
    ``edgeq.quantizer``, the layer above every handler. ``data``: calibration data is
    "required" (unless ``ranges_replace_data`` and a ranges table is given), "optional" (read
    only where shape inference needs it) or "unused". ``calibrated``: activation scales are
    fixed offline (the calibrate stage runs). ``formats``: the output formats it can write."""

    name: str
    handler: str
    help: str
    data: Literal["required", "optional", "unused"]
    calibrated: bool = False
    ranges_replace_data: bool = False
    formats: tuple[str, ...] = ("qdq",)
    missing_data: str = ""  # the error when required data is missing: what to pass instead


# The modes of ``edgeq quantize --mode`` and ``QuantConfig.mode``, in the order the CLI lists
# them. A new mode is a row here and a handler module (docs/architecture.md, "Adding a mode").
MODES: dict[str, ModeSpec] = {m.name: m for m in (
    ModeSpec(
        "auto", "edgeq.auto.mode:quantize_auto",
        "per-layer precision chosen by measured error and speed, never slower than fp32 (the default with --calib)",
        data="required", formats=("qdq", "qoperator"),
        missing_data="--auto needs calibration data: pass --calib DATA (or data=...)"),
    ModeSpec(
        "static", "edgeq.stages.int8:quantize_int8",
        "uniform int8 (every node that has a fast int8 kernel), activation ranges calibrated offline",
        data="required", calibrated=True, ranges_replace_data=True, formats=("qdq", "qoperator"),
        missing_data="static quantization needs calibration data: pass --calib DATA (or data=...) "
                     "or reuse a ranges table with --ranges FILE; or use --mode dynamic"),
    ModeSpec(
        "dynamic", "edgeq.stages.int8:quantize_int8",
        "int8 weights, activations quantized at run time (no calibration data)",
        data="unused"),
    ModeSpec(
        "fp16", "edgeq.stages.fp16:quantize_fp16",
        "fp16 compute, fp32 inputs and outputs",
        data="optional"),
    ModeSpec(
        "compress", "edgeq.stages.compress:quantize_compressed",
        "smallest files: Conv/MatMul/Gemm weights and embeddings in N bits through codebooks (--weights "
        "kmeans:N, uniform:N or pot pick this mode), rebuilt when the session loads, fp32 compute; "
        "--max-size: per-layer widths for a file size, measured on --calib's samples where given",
        data="optional"),
    ModeSpec(
        "weight-only", "edgeq.stages.weight_only:quantize_weight_only",
        "MatMul/Gemm weights in blocks along K, int8 or int4 (--weights int4 picks this mode), float "
        "compute (MatMulNBits, or blocked DequantizeLinear); embeddings int8 (language models); with "
        "--calib, GPTQ rounding",
        data="optional"),
)}


def weight_codebook(weights: str) -> tuple[str, int] | None:
    """``(scheme, bits)`` of a codebook weight type (``kmeans:N``, ``uniform:N`` with N 2-8, ``pot``:
    4 bits, sign and exponent), None for int8/int4; a UsageError for anything else."""
    if weights in ("int8", "int4"):
        return None
    if weights == "pot":
        return "pot", 4
    scheme, _, bits = str(weights).partition(":")
    if scheme in ("kmeans", "uniform") and bits.isdigit() and 2 <= int(bits) <= 8:
        return scheme, int(bits)
    raise UsageError(f"weights must be int8, int4, kmeans:N or uniform:N (N 2 to 8 bits) or pot, got {weights!r}")


def parse_size_target(text: str) -> tuple[str, float]:
    """``--max-size``: "2.5" or "2.5mb" -> ("mb", 2.5); "8x" -> ("ratio", 8.0); "min" -> ("min", 0.0)
    (auto mode: the smallest file that keeps its promise); a UsageError otherwise."""
    value = str(text).strip().lower()
    if value in ("min", "smallest"):
        return "min", 0.0
    kind, number = ("ratio", value[:-1]) if value.endswith("x") else ("mb", value.removesuffix("mb"))
    try:
        amount = float(number)
    except ValueError:
        amount = float("nan")
    if not amount > 0 or amount == float("inf") or (kind == "ratio" and amount <= 1):
        raise UsageError(f"--max-size takes megabytes (2.5), a ratio to the input file above 1 (8x) or min (auto "
                         f"mode), not {text!r}")
    return kind, amount


def default_mode(*, has_data: bool, has_ranges: bool = False, format: str = "qdq", weights: str = "int8",
                 max_size: Any = None) -> str:
    """The mode when the caller names none (``edgeq quantize`` without --mode, ``edgeq.quantize``
    without a config): auto where there is calibration data to measure with; static with a
    reused ranges table, for the qoperator format (scales fixed offline), or with no data at all
    (whose error then says what to pass); weight-only for int4 weights (static mode's W4A8 is asked
    for by name); compress for codebook weights or a size target (``max_size``), auto for
    ``max_size="min"`` (the smallest file that keeps auto's promise).
    A ``QuantConfig`` built without ``mode`` is static."""
    if weights == "int4":
        return "weight-only"
    if max_size is not None and str(max_size).strip().lower() in ("min", "smallest"):
        return "auto"  # the smallest file that keeps a fidelity promise: only auto makes one
    if max_size is not None or weight_codebook(weights) is not None:
        return "compress"
    return "auto" if has_data and not has_ranges and format == "qdq" else "static"


# per-node overrides of int8; "int16": int16 activations, int8 weights; "int8-per-token": int8 weights,
# activations quantized at run time one scale per row (MatMul/Gemm with constant weights; others stay fp32)
# "int8" matters with int4 weights only (weight-only mode, static W4A8): that layer's weights get 8 bits
# "int8-dynamic": the same with one activation scale per tensor (DynamicQuantizeMatMul)
PRECISIONS = ("fp32", "fp16", "int16", "int8-per-token", "int8-dynamic", "int8")
def codebook_spec(value: Any) -> tuple[str, int] | None:
    """``weight_codebook`` of a per-layer precision value: None where it is not a codebook type."""
    try:
        return weight_codebook(value) if isinstance(value, str) else None
    except UsageError:
        return None


def _is_codebook(precision: Any) -> bool:
    return codebook_spec(precision) is not None


_LEGACY_PRECISION = {"exclude": "fp32", "int16_nodes": "int16", "fp16_nodes": "fp16"}  # the older list fields


class NodePrecision(Mapping[str, str]):
    """Per-layer precision: an ordered, immutable map of node name to ``fp32``, ``fp16``, ``int16``
    ``int8-per-token`` or ``int8-dynamic`` (int8 is what every other node gets where it has a fast
    kernel). An ``fp32``, ``int8-per-token`` or ``int8-dynamic`` key may also be an op type (``{"Softmax": "fp32"}`` keeps every
    Softmax float, ``{"MatMul": "int8-per-token"}`` makes every weighted MatMul per-token dynamic).

        NodePrecision({"conv1": "fp32", "conv7": "int16"}).nodes("int16") == ("conv7",)

    Built from a mapping or (name, precision) pairs; a later entry for a name replaces an earlier
    one (``with_`` merges that way). Hashable, so a ``QuantConfig`` stays a frozen value."""

    __slots__ = ("_map",)

    def __init__(self, entries: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = entries.items() if isinstance(entries, Mapping) else entries
        out: dict[str, str] = {}
        for pair in pairs:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise UsageError(f"precision entries are (node, precision) pairs, not {pair!r}")
            name, precision = pair
            if not isinstance(name, str) or not name:
                raise UsageError(f"precision keys are node names (or op types), not {name!r}")
            if precision not in PRECISIONS and not _is_codebook(precision):
                raise UsageError(f"precision of {name!r} must be one of {', '.join(PRECISIONS)} "
                                 f"(int8 is the default), or in compress mode kmeans:N, uniform:N or pot, "
                                 f"not {precision!r}")
            out.pop(name, None)  # a replaced entry takes the new one's place in the order
            out[name] = precision
        self._map = out

    def __getitem__(self, name: str) -> str:
        return self._map[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def __hash__(self) -> int:
        return hash(tuple(self._map.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and list(self.items()) == list(other.items())

    def __repr__(self) -> str:
        return f"NodePrecision({self._map!r})"

    def nodes(self, precision: str) -> tuple[str, ...]:
        """The names (and, for fp32, op types) given ``precision``, in order."""
        return tuple(n for n, p in self._map.items() if p == precision)

    def with_(self, entries: Mapping[str, str] | Iterable[tuple[str, str]]) -> NodePrecision:
        """This map with ``entries`` added; an entry for a name already here replaces it."""
        more = entries.items() if isinstance(entries, Mapping) else entries
        return NodePrecision([*self._map.items(), *more])


def parse_precision(text: str) -> tuple[str, str]:
    """``NODE=PRECISION`` (the CLI's ``--precision``) as a pair."""
    name, sep, precision = str(text).rpartition("=")
    if not sep or not name:
        raise UsageError(f"--precision takes NODE=PRECISION (e.g. conv1=fp16), not {text!r}")
    return name, precision.strip().lower()


Mode = Literal["static", "dynamic", "fp16", "auto", "weight-only", "compress"]
Method = Literal["minmax", "percentile", "entropy", "mse", "tail"]
ActDtype = Literal["int8", "uint8", "int16"]
Format = Literal["qdq", "qoperator"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "mode": tuple(MODES),
    "method": ("minmax", "percentile", "entropy", "mse", "tail"),
    "activations": ("int8", "uint8", "int16"),
    "weight_op": ("matmulnbits", "dequantize"),
    "format": ("qdq", "qoperator"),
    "recurrent": ("int8", "float"),
    "float_weights": ("fp16", "fp32"),
    "token_rows": ("full", "narrow"),
}
_OPTIONAL = {"token_rows"}  # None: edgeq decides


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """Everything ``edgeq quantize`` can be told. The defaults are meant for unseen models."""

    mode: Mode = "static"
    method: Method = "minmax"
    percentile: float = 99.99
    num_bins: int = 2048
    granularity: Granularity = PerChannel()
    activations: ActDtype = "uint8"
    # int4: weight-only mode (blocks along K, ``granularity=PerBlock(n)``, default 32), or static mode's
    # W4A8 (per-channel int4 Conv/MatMul/Gemm weights with int8 activations, opset 21); pot: compress
    # mode's codebooks, or in static mode int8 weight levels 0 and +-2^e (quantize_weights.py (9))
    weights: str = "int8"
    # weight-only mode: onnxruntime's MatMulNBits, or the standard blocked DequantizeLinear (opset 21)
    weight_op: str = "matmulnbits"
    # MatMulNBits: 0 float compute (exact), 4 int8 compute (faster on some CPUs, moves the outputs),
    # None: both timed and compared on this machine (stages/accuracy_level.py)
    accuracy_level: int | None = None
    symmetric: bool = False
    # older spellings of ``precision``, accepted and merged into it (read back as properties):
    exclude: dataclasses.InitVar[Sequence[str]] = ()  # -> "fp32" (node names or op types)
    int16_nodes: dataclasses.InitVar[Sequence[str]] = ()  # -> "int16" (int16 activations, int8 weights)
    fp16_nodes: dataclasses.InitVar[Sequence[str]] = ()  # -> "fp16" (Casts at the region boundaries)
    format: Format = "qdq"
    integer_only: bool = False
    strict: bool = False
    opset: int | None = None
    max_samples: int | None = None
    batch_size: int = 1
    dynamic_conv: bool = False
    # MatMul/Gemm quantized at run time (dynamic mode; static mode's between-float-ops MatMuls):
    # PerTensor() (DynamicQuantizeMatMul) or PerToken() (one scale per row, passes/per_token.py)
    dynamic_granularity: PerTensor | PerToken = PerTensor()
    # MatMuls quantized at run time (per token, or per tensor), with calibration data: input channels
    # far above the median channel's calibrated range computed in float beside the int8 kernel
    # (passes/outliers.py)
    outlier_channels: bool = True
    recurrent: str = "int8"  # LSTM: int8 weights (DynamicQuantizeLSTM, format qdq) or "float"
    # weights of layers left float: stored as fp16 and cast to fp32 at load (passes/float_weights.py), or "fp32"
    float_weights: str = "fp16"
    # weights of u8s8 kernels (Conv, MatMul, Gemm, LSTM) within 7 bits: None (default): where this
    # CPU's onnxruntime saturates products of 8-bit weights (x86 without VNNI, measured once:
    # runtime/cpu.py) and the provider is the CPU, static/dynamic modes with data keep whichever of
    # 7 and 8 bits scores better on the calibration samples (stages/weight_bits.py), and auto
    # measures the same on its uniform build (auto/weight_width.py); passes alone use 7; True: 7
    # bits (a model bound for such CPUs); False: 8 bits
    reduce_range: bool | None = None
    # per-token MatMuls on a CPU that saturates 8-bit products (passes/per_token.py (2)): "full"
    # rows (255 levels; 8-bit weights with same-sign pairs along K within 128, or 7 bits) or
    # "narrow" rows (181 levels, 8-bit weights, pairs within 181); None (default): full, but auto
    # builds both and keeps the better
    token_rows: str | None = None
    # a Conv whose int8 output only float ops read: per-channel output steps (passes/channel_scales.py)
    channel_scales: bool = True
    min_sqnr: float | None = None
    metric: str | None = None
    min_score: float | None = None
    # weight-only int4 of a decoder: per layer 4 bits, 8 bits or float, the smallest file whose
    # perplexity on the calibration tokens is at most (1 + this) x fp32's (stages/decoder_bits.py)
    max_ppl_increase: float | None = None
    # compress mode: the file at most this size, "2.5" (MB) or "8x" (times smaller than the input
    # file): per layer the codebook width that keeps the outputs closest (stages/size_target.py);
    # auto mode: its answer's weights stored in fewer bits to fit, its fidelity promise kept (auto/size_fit.py)
    max_size: str | None = None
    # auto mode without a metric of the user's: outputs holding class scores keep their top-1 class
    # on at least this share of rows, estimated from margins (edgeq/auto/top1.py; 0: no such guard)
    min_top1: float = 0.995
    # ... and where no output holds class scores, outputs holding sigmoid scores keep the set above
    # each common threshold (0.25-0.5) to at least this IoU, estimated from margins (auto/scores.py;
    # 0: no such guard)
    min_iou: float = 0.95
    seed: int = 0
    provider: str = "cpu"  # auto mode: the provider whose latency counts ("never slower than fp32" there)
    # auto mode: intra-op threads for those latency measurements; None (the default): 1 thread, and an
    # int8 answer slower at 2 threads must be faster over 1 and 2 together (auto/placement.py, two_threads)
    threads: int | None = None
    precision: NodePrecision = NodePrecision()  # per-layer precision: node name -> fp32 | fp16 | int16
    time_budget_s: float | None = 600.0  # auto mode: optional search steps stop after about this long (None: no limit)

    def _check_w4a8(self) -> None:
        """Static mode with int4 weights (W4A8: ``passes/quantize_weights.py`` (8)): per channel or per
        tensor, the QDQ format, opset 21 (int4 tensors; the default then)."""
        if isinstance(self.granularity, PerBlock):
            raise UsageError("static int4 weights are per channel (or per tensor): blocks along K are weight-only "
                             "mode's (--mode weight-only)")
        if self.format != "qdq":
            raise UsageError("static int4 weights are written in the QDQ format (int4 DequantizeLinear): "
                             "drop --format qoperator, whose integer operators take 8-bit weights")
        if self.opset is None:
            object.__setattr__(self, "opset", 21)
        elif self.opset < 21:
            raise UsageError(f"int4 weights need opset 21 or later (int4 tensors), got --opset {self.opset}")

    def __post_init__(self, exclude: Sequence[str], int16_nodes: Sequence[str], fp16_nodes: Sequence[str]) -> None:
        _check_types(self)
        object.__setattr__(self, "precision", _merge_precision(
            self.precision, {"exclude": exclude, "int16_nodes": int16_nodes, "fp16_nodes": fp16_nodes}))
        for field, choices in _CHOICES.items():
            value = getattr(self, field)
            if value not in choices and not (field in _OPTIONAL and value is None):
                raise UsageError(
                    f"unknown {field} {value!r}: choose one of {', '.join(choices)}"
                )
        if not 0.0 < self.percentile <= 100.0:
            raise UsageError(f"percentile must be in (0, 100], got {self.percentile}")
        if not 128 <= self.num_bins <= MAX_BINS:
            raise UsageError(f"num_bins must be between 128 and {MAX_BINS}, got {self.num_bins}")
        if self.max_samples is not None and self.max_samples < 1:
            raise UsageError(f"max_samples must be positive, got {self.max_samples}")
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be positive, got {self.batch_size}")
        if self.opset is not None and not 10 <= self.opset <= 26:
            raise UsageError(f"opset must be between 10 and 26, got {self.opset}")
        object.__setattr__(self, "granularity", parse_granularity(self.granularity))
        if self.max_size is not None:
            object.__setattr__(self, "max_size", str(self.max_size).strip().lower())
            if parse_size_target(self.max_size)[0] == "min" and self.mode != "auto":
                raise UsageError("--max-size min (the smallest file that keeps the fidelity promise) is auto mode's "
                                 "(--mode auto, with --calib): compress mode has no promise, give megabytes or a ratio")
            if self.mode not in ("compress", "auto"):
                raise UsageError(f"--max-size chooses per-layer codebook widths: it is compress mode's (the default "
                                 f"with it; fp32 kernels) or auto mode's (int8 kernels, its fidelity promise kept), "
                                 f"not --mode {self.mode}")
            if self.mode == "auto" and self.weights != "int8":
                raise UsageError(f"--max-size in auto mode chooses each layer's width itself: drop --weights {self.weights}")
            if self.mode == "auto" and self.format != "qdq":
                raise UsageError("--max-size in auto mode stores weights through codebooks that the session unpacks "
                                 "when it loads: the QDQ format's (integer-only targets and edgeq's integer reference "
                                 "run no unpacking); drop --format qoperator")
            if self.mode == "compress" and self.weights == "int8":  # the field's default: k-means, up to 8 bits a layer
                object.__setattr__(self, "weights", "kmeans:8")
        codebook = weight_codebook(self.weights)
        static_pot = self.weights == "pot" and self.mode == "static"  # int8 levels 0, +-2^e: shift kernels
        if (codebook is not None) != (self.mode == "compress") and not static_pot:
            raise UsageError(f"--weights {self.weights} and --mode {self.mode} disagree: kmeans:N, uniform:N and pot "
                             "are the compress mode's (the default with them; pot also static mode's, for shift "
                             "kernels), int8 and int4 the other modes'")
        codebook_nodes = [name for name, value in self.precision.items() if _is_codebook(value)]
        if codebook_nodes and self.mode != "compress":
            raise UsageError(f"precision {codebook_nodes[0]}={self.precision[codebook_nodes[0]]} is a compress-mode "
                             "weight type: use it with --weights kmeans:N, uniform:N or pot")
        if self.mode == "compress":
            pass
        elif self.mode == "weight-only":
            if isinstance(self.granularity, PerTensor):
                raise UsageError("weight-only mode quantizes weights in blocks: use --granularity per-block:N "
                                 "(N a power of two from 16, default 32)")
            size = self.granularity.size if isinstance(self.granularity, PerBlock) else 32
            if size < 16 or size & (size - 1):
                raise UsageError(f"block size must be a power of two from 16 (16, 32, 64, 128 ...), got {size}")
            if self.accuracy_level not in (None, 0, 1, 2, 3, 4):
                raise UsageError(f"accuracy_level must be 0-4 (0: float compute, 4: int8), got {self.accuracy_level}")
            if self.max_ppl_increase is not None and self.weights != "int4":
                raise UsageError("--max-ppl-increase chooses between 4 and 8 bits per layer: use it with --weights int4")
        elif self.weights == "int4" and self.mode == "static":
            self._check_w4a8()
        elif self.weights == "int4" or isinstance(self.granularity, PerBlock):
            raise UsageError(f"int4 and per-block weights are weight-only or static: use --mode weight-only (the "
                                   f"default with --weights int4) or --mode static (W4A8), not --mode {self.mode}")
        if self.max_ppl_increase is not None and self.mode != "weight-only":
            raise UsageError("--max-ppl-increase is a target for weight-only decoders: use it with --weights int4")
        if self.max_ppl_increase is not None and not 0 <= self.max_ppl_increase < 10:
            raise UsageError(f"max_ppl_increase is a fraction (0.05 for 5%), got {self.max_ppl_increase}")
        if isinstance(self.granularity, PerToken):
            raise UsageError("per-token is a granularity of activations quantized at run time: pass it as "
                             "dynamic_granularity (--dynamic-granularity per-token); weights are per-channel or per-tensor")
        object.__setattr__(self, "dynamic_granularity", parse_granularity(self.dynamic_granularity))
        if not isinstance(self.dynamic_granularity, (PerTensor, PerToken)):
            raise UsageError(f"dynamic_granularity must be per-tensor or per-token, not {self.dynamic_granularity}")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"threads must be at least 1, got {self.threads}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise UsageError(f"time_budget_s must be positive, got {self.time_budget_s}")
        if self.format == "qoperator" and (self.activations == "int16" or self.int16_nodes or self.fp16_nodes):
            raise UnsupportedError("int16 activations and fp16 nodes need --format qdq (the QOperator format "
                                   "has int8 kernels only)")
        if not 0.0 <= self.min_top1 <= 1.0:
            raise UsageError(f"min_top1 must be between 0 and 1 (a share of rows; 0 turns the guard off), got {self.min_top1}")
        if not 0.0 <= self.min_iou <= 1.0:
            raise UsageError(f"min_iou must be between 0 and 1 (an IoU; 0 turns the guard off), got {self.min_iou}")
        if self.min_score is not None and self.metric is None:
            raise UsageError("min_score needs a metric: pass metric='module:function' (or --metric)")
        if self.format not in MODES[self.mode].formats:
            raise UsageError(f"--format {self.format} needs static mode (activation scales fixed offline)")

    # -- serialization -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["granularity"] = str(self.granularity)
        out["dynamic_granularity"] = str(self.dynamic_granularity)
        out["precision"] = dict(self.precision)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantConfig:
        known = {f.name for f in dataclasses.fields(cls)} | set(_LEGACY_PRECISION)
        normalized = {k.replace("-", "_"): v for k, v in data.items()}
        unknown = sorted(set(normalized) - known)
        if unknown:
            raise UsageError(
                f"unknown config field(s) {', '.join(unknown)}: known fields are "
                f"{', '.join(sorted(known))}"
            )
        return cls(**normalized)

    def replace(self, **changes: Any) -> QuantConfig:
        """A copy with ``changes``; ``exclude=``, ``int16_nodes=``, ``fp16_nodes=`` add to ``precision``.

        (``dataclasses.replace`` would hand the shorthands' current values back in as well, so that
        ``precision=`` could not change a node they name.)"""
        for name in _LEGACY_PRECISION:
            changes.setdefault(name, ())
        return dataclasses.replace(self, **changes)

    def with_precision(self, entries: Mapping[str, str] | Iterable[tuple[str, str]]) -> QuantConfig:
        """A copy whose per-layer precision has ``entries`` added (replacing those of the same name)."""
        return self.replace(precision=self.precision.with_(entries))


# The scalar fields' types (a config file gives any JSON/TOML value): checked before any other rule.
_NUMBER = (int, float)
_TYPES: dict[str, tuple[type, ...]] = {
    "mode": (str,), "method": (str,), "activations": (str,), "weights": (str,), "weight_op": (str,), "accuracy_level": (int, type(None)), "format": (str,),
    "recurrent": (str,), "float_weights": (str,), "percentile": _NUMBER, "num_bins": (int,), "symmetric": (bool,),
    "reduce_range": (bool, type(None)), "token_rows": (str, type(None)),
    "integer_only": (bool,), "strict": (bool,), "opset": (int, type(None)), "max_samples": (int, type(None)),
    "batch_size": (int,), "dynamic_conv": (bool,), "channel_scales": (bool,), "outlier_channels": (bool,), "min_sqnr": (*_NUMBER, type(None)),
    "metric": (str, type(None)), "min_score": (*_NUMBER, type(None)), "min_top1": _NUMBER, "min_iou": _NUMBER, "seed": (int,), "provider": (str,),
    "threads": (int, type(None)), "time_budget_s": (*_NUMBER, type(None)), "max_size": (str, *_NUMBER, type(None)),
}
MAX_BINS = 1 << 16  # entropy/mse histograms: more bins than this only cost memory


def _check_types(config: QuantConfig) -> None:
    for field, types in _TYPES.items():
        value = getattr(config, field)
        wrong = isinstance(value, bool) and bool not in types  # True is an int to Python, not here
        if wrong or not isinstance(value, types):
            names = {int: "an integer", float: "a number", str: "a string", bool: "true/false", type(None): "null"}
            want = " or ".join(names[t] for t in types if not (t is int and float in types))
            raise UsageError(f"config field {field} must be {want}, not {value!r} ({type(value).__name__}): fix the config")


def _names(field: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    try:
        names = tuple(value)
    except TypeError:
        raise UsageError(f"{field} must be a list of node names, not {value!r}") from None
    for name in names:
        if not isinstance(name, str):
            raise UsageError(f"{field} must be a list of node names, not {value!r}")
    return names


def _merge_precision(precision: Any, legacy: dict[str, Any]) -> NodePrecision:
    """``precision`` (a mapping or pairs) with the names of the older list fields added; a name
    given two different precisions is a usage error."""
    merged = dict(NodePrecision(precision if isinstance(precision, Mapping) else _pairs(precision)))
    for field, value in legacy.items():
        for name in _names(field, value):
            want = _LEGACY_PRECISION[field]
            if merged.get(name, want) != want:
                raise UsageError(f"node {name!r} is given two precisions, {merged[name]} and {want}: "
                                 "choose one precision")
            merged[name] = want
    return NodePrecision(merged)


def _pairs(value: Any) -> list:
    try:
        return list(value)
    except TypeError:
        raise UsageError(f"precision must be a mapping of node name to precision, not {value!r}") from None


def _names_at(precision: str) -> property:
    return property(lambda self: self.precision.nodes(precision),
                    doc=f"The nodes whose precision is {precision!r} (``precision.nodes({precision!r})``).")


# the older list fields, read back from the one map
QuantConfig.exclude = _names_at("fp32")  # type: ignore[assignment]
QuantConfig.int16_nodes = _names_at("int16")  # type: ignore[assignment]
QuantConfig.fp16_nodes = _names_at("fp16")  # type: ignore[assignment]


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML or JSON file into a dict (a ``[quantize]`` table is used if present)."""
    path = regular_file(path, "config file")
    try:
        if path.endswith(".toml"):
            try:
                import tomllib
            except ModuleNotFoundError:  # Python < 3.11
                import tomli as tomllib  # type: ignore[no-redef]
            with open(path, "rb") as f:
                data = tomllib.load(f)
        else:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
    except (ValueError, OSError) as e:
        raise UsageError(f"config file {path} could not be read ({e}): fix its syntax") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a table/object of options")
    return data.get("quantize", data)
