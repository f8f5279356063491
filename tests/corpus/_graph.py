"""A tiny builder over onnx.helper for the corpus graphs: nodes, initializers, Constant weights."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["GraphBuilder", "he", "bn_stats"]


def he(rng: np.random.Generator, *shape: int, fan_in: int | None = None) -> np.ndarray:
    """He-initialized float32 weights (fan-in from the trailing dims unless given)."""
    fan = fan_in if fan_in is not None else int(np.prod(shape[1:])) or 1
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan)).astype(np.float32)


def bn_stats(rng: np.random.Generator, channels: int) -> list[np.ndarray]:
    """Non-trivial BatchNorm scale, bias, running mean and running variance."""
    return [
        rng.uniform(0.5, 1.5, channels).astype(np.float32),
        (rng.standard_normal(channels) * 0.1).astype(np.float32),
        (rng.standard_normal(channels) * 0.2).astype(np.float32),
        rng.uniform(0.5, 2.0, channels).astype(np.float32),
    ]


class GraphBuilder:
    """Collect nodes and initializers; ``constants=True`` puts weights in Constant nodes."""

    def __init__(self, prefix: str = "n", constants: bool = False) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.constants = constants
        self._ids = itertools.count()
        self.prefix = prefix

    def fresh(self, hint: str = "t") -> str:
        return f"{hint}_{next(self._ids)}"

    def weight(self, name: str, array: np.ndarray) -> str:
        if self.constants:
            self.nodes.append(
                helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))
            )
        else:
            self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def init(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, name: str | None = None, **attrs):
        outputs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(
            helper.make_node(op_type, inputs, outputs, name=name or self.fresh(op_type), **attrs)
        )
        return outputs[0] if n_out == 1 else outputs

    def graph(self, name: str, inputs, outputs) -> onnx.GraphProto:
        return helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.initializers)

    def model(self, name: str, inputs, outputs, opset: int, ir_version: int | None = None) -> onnx.ModelProto:
        model = helper.make_model(
            self.graph(name, inputs, outputs), opset_imports=[helper.make_opsetid("", opset)]
        )
        model.ir_version = ir_version or min(model.ir_version, 10)
        return model
