"""What the integer interpreter compiles each node into, and the registry of op compilers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx_ir as ir

from edgeq.reference.fixedpoint import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    requantize,
)

__all__ = ["Kernel", "Context", "register", "OPS", "attr", "multipliers", "describe"]


@dataclasses.dataclass
class Kernel:
    """``fn(inputs) -> outputs`` on numpy arrays, and the fixed-point ``params`` it uses."""

    fn: Callable[[list[np.ndarray | None]], list[np.ndarray]]
    params: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Context:
    """Compile-time view of a node: its constant inputs (scales, zero points, weights)."""

    node: ir.Node
    single_rounding: bool = False

    def requantize(self, acc, multiplier, shift, zero_point, dtype) -> np.ndarray:
        return requantize(acc, multiplier, shift, zero_point, dtype, self.single_rounding)

    def scale(self, x, multiplier, shift) -> np.ndarray:
        return multiply_by_quantized_multiplier(x, multiplier, shift, self.single_rounding)

    def const(self, idx: int) -> np.ndarray | None:
        if idx >= len(self.node.inputs) or self.node.inputs[idx] is None:
            return None
        value = self.node.inputs[idx]
        if value.is_graph_input():
            return None
        tensor = ir.convenience.get_const_tensor(value)
        return None if tensor is None else tensor.numpy()

    def need(self, idx: int, what: str) -> np.ndarray:
        from edgeq.errors import UnsupportedError

        array = self.const(idx)
        if array is None:
            raise UnsupportedError(
                f"{self.node.op_type} {self.node.name!r}: {what} (input {idx}) must be a "
                "constant for the integer reference"
            )
        return array


OPS: dict[tuple[str, str], Callable[[Context], Kernel]] = {}


def register(*op_types: str, domain: str = ""):
    def deco(fn):
        for op in op_types:
            OPS[(domain, op)] = fn
        return fn

    return deco


def attr(node: ir.Node, name: str, default: Any = None) -> Any:
    a = node.attributes.get(name)
    return default if a is None else a.value


def multipliers(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise ``quantize_multiplier`` (done once, at compile time)."""
    real = np.asarray(real, dtype=np.float64)
    pairs = [quantize_multiplier(r) for r in real.ravel()]
    m = np.array([p[0] for p in pairs], np.int64).reshape(real.shape)
    s = np.array([p[1] for p in pairs], np.int64).reshape(real.shape)
    return m, s


def describe(real: np.ndarray, m: np.ndarray, s: np.ndarray) -> dict[str, Any]:
    """JSON-ready multiplier/shift record (scalars stay scalars)."""
    real = np.asarray(real, dtype=np.float64)
    if real.size == 1:
        return {"real": float(real.ravel()[0]), "multiplier": int(m.ravel()[0]),
                "shift": int(s.ravel()[0])}
    return {"real": real.ravel().tolist(), "multiplier": m.ravel().tolist(),
            "shift": s.ravel().tolist()}
