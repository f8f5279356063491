"""The quantization plan: what the passes decided, shared from selection to the report.

``SelectNodesPass`` fills ``decisions`` (every node: quantized or not, and why) and ``values`` (the
activation values that get a Q/DQ pair); ``ShareScalesPass`` points shape-only outputs at the value
whose scale they reuse; the quantizer turns calibrated ranges into ``qparams``; the rewrite
passes read the plan and record what they wrote into ``weights``.

Precision per node: int8 nodes use the config's activation type (uint8/int8, or int16 for the
whole model); nodes in ``int16`` (``QuantConfig.int16_nodes`` and the Relu/Clip folded into
them) get int16 activation Q/DQ (symmetric, zero point 0) from the same calibrated range, while
their weights stay int8. ``params(value, dtype)`` gives a root's parameters in either type.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx_ir as ir

__all__ = ["Role", "Decision", "QParams", "QuantPlan", "node_label", "qparams_from_range", "attr_value", "is_float", "fresh_base", "derived_name"]


class Role:
    """How a node takes part in the int8 graph."""

    COMPUTE = "compute"  # has an int8 kernel (QLinearConv, QLinearAdd, ...)
    PASSTHROUGH = "passthrough"  # moves data only; shares its input's scale (Reshape, MaxPool)
    FOLDED = "folded"  # Relu/Clip folded into its producer's output range
    DYNAMIC = "dynamic"  # weights int8 offline, activations quantized at run time (per row: plan.per_token)
    WEIGHT_ONLY = "weight-only"  # an int8 table read by an int8 Gather (embeddings)
    FLOAT = "float"


@dataclasses.dataclass(frozen=True)
class Decision:
    role: str
    reason: str = ""

    @property
    def quantized(self) -> bool:
        return self.role != Role.FLOAT


@dataclasses.dataclass(frozen=True)
class QParams:
    """Scale and zero point of one activation tensor (per tensor)."""

    scale: float
    zero_point: int
    dtype: str  # "uint8" | "int8" | "int16"
    lo: float
    hi: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def node_label(node: ir.Node) -> str:
    return node.name or f"<{node.op_type}>"


@dataclasses.dataclass
class QuantPlan:
    """Mutable state shared by the passes of one quantize run."""

    decisions: dict[ir.Node, Decision] = dataclasses.field(default_factory=dict)
    # activation value -> the value whose range/scale it uses (itself for a root)
    values: dict[ir.Value, ir.Value] = dataclasses.field(default_factory=dict)
    # root value -> its quantization parameters (filled after calibration)
    qparams: dict[ir.Value, QParams] = dataclasses.field(default_factory=dict)
    # node -> weight summary written by QuantizeWeightsPass / DynamicQuantizePass
    weights: dict[ir.Node, dict[str, Any]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    # nodes whose activation Q/DQ (inputs and outputs) are int16 while the rest use the default
    int16: set[ir.Node] = dataclasses.field(default_factory=set)
    # roots calibrated apart whose ranges are merged into one scale (share_scales.py (4))
    unions: list[list[ir.Value]] = dataclasses.field(default_factory=list)
    # Role.DYNAMIC MatMul/Gemm whose input gets one scale per row at run time (per_token.py)
    per_token: set[ir.Node] = dataclasses.field(default_factory=set)
    # a run-time-quantized MatMul's input -> its calibrated per-channel max |x| on the last axis (outliers.py)
    token_channels: dict[ir.Value, np.ndarray] = dataclasses.field(default_factory=dict)
    # root value -> its calibrated per-channel (min, max) (Conv outputs; passes/channel_scales.py)
    channel_ranges: dict[ir.Value, tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)

    def decide(self, node: ir.Node, role: str, reason: str = "") -> None:
        self.decisions[node] = Decision(role, reason)

    def role(self, node: ir.Node | None) -> str:
        if node is None:
            return Role.FLOAT
        decision = self.decisions.get(node)
        return decision.role if decision else Role.FLOAT

    def is_int8(self, node: ir.Node | None) -> bool:
        return self.role(node) in (Role.COMPUTE, Role.PASSTHROUGH, Role.FOLDED)

    def root(self, value: ir.Value) -> ir.Value:
        seen = 0
        while self.values.get(value, value) is not value:
            value = self.values[value]
            seen += 1
            assert seen < 100_000, "cycle in scale sharing"
        return value

    def roots(self) -> list[ir.Value]:
        """The values calibration must observe (one per distinct scale)."""
        out: dict[ir.Value, None] = {}
        for value in self.values:
            out[self.root(value)] = None
        return list(out)

    def is_int16(self, node: ir.Node | None) -> bool:
        return node is not None and node in self.int16

    def params(self, value: ir.Value, dtype: str | None = None) -> QParams:
        """``value``'s parameters; in ``dtype`` (from the same range) when it differs."""
        qp = self.qparams[self.root(value)]
        if dtype is None or dtype == qp.dtype:
            return qp
        return qparams_from_range(qp.lo, qp.hi, dtype, symmetric=True)

    def input_params(self, node: ir.Node, value: ir.Value) -> QParams:
        """The parameters ``node`` reads ``value`` with (int16 for an int16 node)."""
        return self.params(value, "int16" if node in self.int16 else None)


def qparams_from_range(lo: float, hi: float, dtype: str, symmetric: bool) -> QParams:
    """Scale/zero point covering ``[lo, hi]`` (always including 0, so zero is exact); int16 is
    always symmetric with zero point 0 (what integer int16 kernels expect)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmin, qmax = (0, 255) if dtype == "uint8" else (-128, 127)
    if dtype == "int16":
        absmax = max(-lo, hi)
        scale = absmax / 32767.0 if absmax > 0 else 1.0
        zero_point = 0
    elif symmetric:
        absmax = max(-lo, hi)
        scale = absmax / 127.0 if absmax > 0 else 1.0
        zero_point = 128 if dtype == "uint8" else 0
    else:
        scale = (hi - lo) / float(qmax - qmin) if hi > lo else 1.0
        zero_point = int(np.clip(round(qmin - lo / scale), qmin, qmax))
    scale = float(np.float32(max(scale, 1e-12)))
    return QParams(scale=scale, zero_point=zero_point, dtype=dtype, lo=lo, hi=hi)


def attr_value(node: ir.Node, name: str, default: Any) -> Any:
    """``node``'s attribute ``name`` as a Python value, or ``default`` when it is absent."""
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


def is_float(value: ir.Value | None) -> bool:
    """True for float32 values and for values of unknown type (shape inference may miss them)."""
    import onnx_ir as ir

    return value is not None and value.dtype in (None, ir.DataType.FLOAT)


def fresh_base(graph: ir.Graph, base: str, suffixes: tuple[str, ...] = ("_q", "_scale", "_zp")) -> str:
    """``base`` (or ``base_1`` ...) such that no initializer is named ``base + suffix``."""
    candidate, i = base, 0
    while any(candidate + s in graph.initializers for s in suffixes):
        i += 1
        candidate = f"{base}_{i}"
    return candidate


def derived_name(node: ir.Node, suffix: str) -> str | None:
    """A name for a node that replaces ``node``: ``<name>_<suffix>``, or none when ``node`` has
    none (ORT refuses two nodes with the same non-empty name)."""
    return f"{node.name}_{suffix}" if node.name else None
