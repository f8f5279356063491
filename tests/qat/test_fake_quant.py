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


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device (run on the GPU machine)"))])
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_float32_arithmetic_under_autocast(device, half):
    fq = FakeQuant(np.float32(0.01), np.float32(0), -128, 127).eval().to(device)
    x = torch.randn(8, 8, device=device)
    a = (x @ x).to(half)
    with torch.autocast(device, dtype=half):
        y = fq(x)  # a float32 input stays float32, on the int8 grid
        low = fq(a)  # a half-precision one: float32 arithmetic
    assert y.dtype == torch.float32
    codes = y / 0.01
    assert torch.allclose(codes, codes.round(), atol=1e-3)  # on the int8 grid, not bfloat16's
    reference = fq(a.float())  # the same values quantized in float32, outside autocast
    if device == "cuda":  # stored back in half precision (fake_quant.py (3)): rounded once, after the arithmetic
        assert low.dtype == half and torch.equal(low, reference.to(half))
    else:  # the CPU's fused kernel would round in bfloat16: float32 out
        assert low.dtype == torch.float32 and torch.equal(low, reference)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device (run on the GPU machine)"))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", ["uint8", "int8", "weight"])
def test_fused_matches_the_formula(case, dtype, device, monkeypatch):
    """The fused quantizer (fake_quant.py (5)) gives the outputs and the LSQ gradients of the
    formula written out, in float32 and for bfloat16 inputs under autocast."""
    from edgeq.qat import fake_quant

    gen = torch.Generator().manual_seed(0)
    if case == "weight":
        make = lambda: FakeQuant(np.linspace(0.002, 0.01, 6, dtype=np.float32), np.zeros(6, np.float32), -127, 127,  # noqa: E731
                                 axis=0, weight=True)
        x = torch.randn(6, 4, 3, 3, generator=gen) * 0.3
    else:
        lo, hi, zp = (0, 255, 100) if case == "uint8" else (-128, 127, 0)
        make = lambda: FakeQuant(np.float32(0.02), np.float32(zp), lo, hi)  # noqa: E731
        x = torch.randn(4, 8, 5, 5, generator=gen) * 2  # beyond the range on both sides
    grad = torch.randn(x.shape, generator=gen)
    results = []
    for fused in (False, True):
        monkeypatch.setattr(fake_quant, "FUSED", fused)
        fq = make().train().to(device)
        xi = x.to(device, dtype).requires_grad_(True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype != torch.float32):
            y = fq(xi)
        (y.float() * grad.to(device)).sum().backward()
        results.append((y.float().detach().cpu(), xi.grad.float().cpu(), fq.log_scale.grad.clone().cpu()))
    (y0, gx0, gs0), (y1, gx1, gs1) = results
    atol = 0.0 if dtype == torch.float32 else 0.02  # bfloat16: the formula's output is float32, the fused one's bfloat16
    torch.testing.assert_close(y1, y0, atol=atol, rtol=0.0 if dtype == torch.float32 else 1e-2)
    assert torch.equal(gx1 != 0, gx0 != 0)  # the same elements pass the gradient (inside the range)
    torch.testing.assert_close(gs1, gs0, rtol=1e-4 if dtype == torch.float32 else 2e-2, atol=1e-6)


def test_observed_activation_tracks_its_range():
    fq = FakeQuant(np.float32(1.0), np.float32(0), 0, 255, learn=False).train()
    for _ in range(30):
        fq(torch.rand(64) * 4.0 - 1.0)  # range about [-1, 3]
    assert abs(float(fq.step()) - 4.0 / 255) < 0.1 * 4.0 / 255
    assert 55 <= float(fq.zero_point) <= 72  # -lo / scale, lo about -1
