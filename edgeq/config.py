"""Typed, frozen options. Every CLI option is one field; ``--config FILE`` sets them all.

Granularity is a type, not a string: ``PerTensor()``, ``PerChannel(axis=0)``, ``PerBlock(32)``.
Configs round-trip through JSON (``to_dict``/``from_dict``) and load from TOML or JSON files.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Literal, Union

from edgeq.errors import UnsupportedError, UsageError

__all__ = [
    "MODES",
    "ModeSpec",
    "default_mode",
    "PerTensor",
    "PerChannel",
    "PerBlock",
    "Granularity",
    "QuantConfig",
    "parse_granularity",
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


Granularity = Union[PerTensor, PerChannel, PerBlock]


def parse_granularity(text: str | Granularity) -> Granularity:
    """``per-tensor`` | ``per-channel`` | ``per-channel:AXIS`` | ``per-block:SIZE``."""
    if isinstance(text, (PerTensor, PerChannel, PerBlock)):
        return text
    name, _, arg = str(text).strip().lower().replace("_", "-").partition(":")
    try:
        if name == "per-tensor" and not arg:
            return PerTensor()
        if name == "per-channel":
            return PerChannel(int(arg)) if arg else PerChannel()
        if name == "per-block":
            return PerBlock(int(arg)) if arg else PerBlock()
    except ValueError:
        pass
    raise UsageError(
        f"unknown granularity {text!r}: use per-tensor, per-channel[:AXIS] or per-block[:SIZE]"
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
)}


def default_mode(*, has_data: bool, has_ranges: bool = False, format: str = "qdq") -> str:
    """The mode when the caller names none (``edgeq quantize`` without --mode, ``edgeq.quantize``
    without a config): auto where there is calibration data to measure with; static with a
    reused ranges table, for the qoperator format (scales fixed offline), or with no data at all
    (whose error then says what to pass). A ``QuantConfig`` built without ``mode`` is static."""
    return "auto" if has_data and not has_ranges and format == "qdq" else "static"


Mode = Literal["static", "dynamic", "fp16", "auto"]
Method = Literal["minmax", "percentile", "entropy", "mse"]
ActDtype = Literal["int8", "uint8", "int16"]
Format = Literal["qdq", "qoperator"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "mode": tuple(MODES),
    "method": ("minmax", "percentile", "entropy", "mse"),
    "activations": ("int8", "uint8", "int16"),
    "weights": ("int8",),
    "format": ("qdq", "qoperator"),
}


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """Everything ``edgeq quantize`` can be told. The defaults are meant for unseen models."""

    mode: Mode = "static"
    method: Method = "minmax"
    percentile: float = 99.99
    num_bins: int = 2048
    granularity: Granularity = PerChannel()
    activations: ActDtype = "uint8"
    weights: str = "int8"
    symmetric: bool = False
    exclude: tuple[str, ...] = ()
    int16_nodes: tuple[str, ...] = ()  # nodes (by name) whose activations are int16 (weights int8)
    fp16_nodes: tuple[str, ...] = ()  # nodes (by name) computed in fp16 (Casts at the boundaries)
    format: Format = "qdq"
    integer_only: bool = False
    strict: bool = False
    opset: int | None = None
    max_samples: int | None = None
    batch_size: int = 1
    dynamic_conv: bool = False
    min_sqnr: float | None = None
    metric: str | None = None
    min_score: float | None = None
    seed: int = 0
    provider: str = "cpu"  # auto mode: the provider whose latency counts ("never slower than fp32" there)
    threads: int = 1  # auto mode: intra-op threads for those latency measurements
    time_budget_s: float | None = 600.0  # auto mode: optional search steps stop after about this long (None: no limit)

    def __post_init__(self) -> None:
        for field, choices in _CHOICES.items():
            value = getattr(self, field)
            if value not in choices:
                if field == "weights" and value == "int4":
                    raise UnsupportedError("only int8 weights (per-channel or per-tensor) are implemented: "
                                           "drop --weights int4 / per-block granularity")
                raise UsageError(
                    f"unknown {field} {value!r}: choose one of {', '.join(choices)}"
                )
        if not 0.0 < self.percentile <= 100.0:
            raise UsageError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.num_bins < 128:
            raise UsageError(f"num_bins must be at least 128, got {self.num_bins}")
        if self.max_samples is not None and self.max_samples < 1:
            raise UsageError(f"max_samples must be positive, got {self.max_samples}")
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be positive, got {self.batch_size}")
        if self.opset is not None and not 10 <= self.opset <= 26:
            raise UsageError(f"opset must be between 10 and 26, got {self.opset}")
        object.__setattr__(self, "granularity", parse_granularity(self.granularity))
        if isinstance(self.granularity, PerBlock):
            raise UnsupportedError("only int8 weights (per-channel or per-tensor) are implemented: "
                                   "drop --weights int4 / per-block granularity")
        if self.threads < 1:
            raise UsageError(f"threads must be at least 1, got {self.threads}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise UsageError(f"time_budget_s must be positive, got {self.time_budget_s}")
        for field in ("exclude", "int16_nodes", "fp16_nodes"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        if self.format == "qoperator" and (self.activations == "int16" or self.int16_nodes or self.fp16_nodes):
            raise UnsupportedError("int16 activations and fp16 nodes need --format qdq (the QOperator format "
                                   "has int8 kernels only)")
        if self.format not in MODES[self.mode].formats:
            raise UsageError(f"--format {self.format} needs static mode (activation scales fixed offline)")

    # -- serialization -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["granularity"] = str(self.granularity)
        for field in ("exclude", "int16_nodes", "fp16_nodes"):
            out[field] = list(getattr(self, field))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuantConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        normalized = {k.replace("-", "_"): v for k, v in data.items()}
        unknown = sorted(set(normalized) - known)
        if unknown:
            raise UsageError(
                f"unknown config field(s) {', '.join(unknown)}: known fields are "
                f"{', '.join(sorted(known))}"
            )
        return cls(**normalized)

    def replace(self, **changes: Any) -> "QuantConfig":
        return dataclasses.replace(self, **changes)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML or JSON file into a dict (a ``[quantize]`` table is used if present)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UsageError(f"config file {path} does not exist: pass an existing .toml or .json file")
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
