"""FakeQuant against onnxruntime's QuantizeLinear/DequantizeLinear, its gradients, and autocast."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgeq.qat.fake_quant import FakeQuant


def _ort_qdq(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int | None) -> np.ndarray:
    zp_type = "uint8" if zp.dtype == np.uint8 else "int8"
    shape = "[" + ",".join(map(str, x.shape)) + "]"
    s_shape = "[]" if axis is None else f"[{scale.size}]"
    attr = "" if axis is None else f"<axis={axis}>"
    text = f"""
    <ir_version: 8, opset_import: ["" : 13]>
    g (float{shape} x, float{s_shape} s, {zp_type}{s_shape} z) => (float{shape} y) {{
        q = QuantizeLinear{attr}(x, s, z)
        y = DequantizeLinear{attr}(q, s, z)
    }}"""
    session = ort.InferenceSession(onnx.parser.parse_model(text).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x, "s": scale, "z": zp})[0]


@pytest.mark.parametrize("axis", [None, 1])
@pytest.mark.parametrize("signed", [False, True])
def test_matches_onnxruntime_exactly(rng, axis, signed):
    x = (rng.standard_normal((4, 3, 5)) * 3).astype(np.float32)
    x[0, 0, :3] = [0.5, 1.5, -2.5]  # ties: QuantizeLinear rounds half to even
    n = 1 if axis is None else 3
    scale = np.full(n, 1.0, np.float32) if n == 1 else np.array([1.0, 0.05, 0.2], np.float32)
    zp = np.zeros(n, np.int8) if signed else np.array([128, 3, 250][:n], np.uint8)
    info = np.iinfo(zp.dtype)
    fq = FakeQuant(scale, zp.astype(np.float32), info.min, info.max, axis=axis).eval()
    got = fq(torch.from_numpy(x)).detach().numpy()
    ref = _ort_qdq(x, scale.reshape(()) if axis is None else scale, zp.reshape(()) if axis is None else zp, axis)
    np.testing.assert_array_equal(got, ref)


def test_lsq_gradient_reaches_scale_and_passes_inputs_straight_through():
    fq = FakeQuant(np.float32(0.1), np.float32(128), 0, 255).train()
    x = torch.linspace(-20, 20, 401, requires_grad=True)  # beyond the range on both sides
    fq(x).sum().backward()
    assert fq.log_scale.grad is not None and float(fq.log_scale.grad.abs()) > 0
    v = x.detach()
    inside, outside = (v > -12.75) & (v < 12.65), (v < -12.85) | (v > 12.75)  # range [-12.8, 12.7]
    assert torch.all(x.grad[inside] == 1) and torch.all(x.grad[outside] == 0)


def test_float32_under_autocast():
    fq = FakeQuant(np.float32(0.01), np.float32(0), -128, 127).eval()
    x = torch.randn(8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fq((x @ x).to(torch.bfloat16))
    assert y.dtype == torch.float32
    codes = y / 0.01
    assert torch.allclose(codes, codes.round(), atol=1e-3)  # on the int8 grid, not bfloat16's


def test_observed_activation_tracks_its_range():
    fq = FakeQuant(np.float32(1.0), np.float32(0), 0, 255, learn=False).train()
    for _ in range(30):
        fq(torch.rand(64) * 4.0 - 1.0)  # range about [-1, 3]
    assert abs(float(fq.step()) - 4.0 / 255) < 0.1 * 4.0 / 255
    assert 55 <= float(fq.zero_point) <= 72  # -lo / scale, lo about -1
