"""Small graphs for calibration tests, built from ONNX text."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["conv_model", "two_input_model", "identity_model"]


def conv_model(seed: int = 0, channels: int = 8, dims: str = "N,3,H,W") -> onnx.ModelProto:
    """x -> Conv -> c -> Relu -> r -> Mul(2) -> y, plus an int64 Shape output s."""
    rng = np.random.default_rng(seed)
    model = onnx.parser.parse_model(
        f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[{dims}] x) => (float[N,{channels},H,W] y, int64[4] s) {{
            c = Conv<pads=[1,1,1,1]>(x, w, b)
            r = Relu(c)
            s = Shape(r)
            y = Mul(r, k)
        }}"""
    )
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(np.zeros(channels, np.float32), "b"),
            numpy_helper.from_array(np.array(2.0, np.float32), "k"),
        ]
    )
    return model


def identity_model(shape: str = "N,D") -> onnx.ModelProto:
    """x -> Identity -> t -> Neg -> y: observing t gives exactly the data fed."""
    return onnx.parser.parse_model(
        f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[{shape}] x) => (float[{shape}] y) {{
            t = Identity(x)
            y = Neg(t)
        }}"""
    )


def two_input_model() -> onnx.ModelProto:
    """ids (int64[B,T]) and mask (float[B,T]) -> y = Cast(ids) * mask, fixed T=4."""
    return onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (int64[B,4] ids, float[B,4] mask) => (float[B,4] y) {
            f = Cast<to=1>(ids)
            y = Mul(f, mask)
        }"""
    )
