"""Fake quantization in torch: one QuantizeLinear -> DequantizeLinear pair of edgeq's QDQ model.

    x -> Q(s, z) -> DQ(s, z)   ==>   x -> (clamp(round(x / s) + z, qmin, qmax) - z) * s

1. Rounding is half to even, as QuantizeLinear's; its gradient is passed straight through.
2. ``learn``: the scale is a parameter trained with the weights (LSQ, Esser et al. 2020: the
   gradient of the rounding error, scaled by 1 / sqrt(elements per scale * qmax)); the zero point
   stays the calibrated one. It is trained as the logarithm of its ratio to the calibrated
   scale (exact at the start): Adam moves every parameter by about its learning rate per step,
   which would zero a weight scale of 1e-3 in a few steps; in the log domain a step changes a
   scale by about that share of itself, and it stays positive.
   Otherwise the scale is observed: activations track a running min/max in training (momentum
   0.9, always including 0), weights take their current max |w| (per-channel activation steps
   keep their calibrated values).
3. The arithmetic is float32 even under ``torch.autocast``: scales and rounding in bfloat16 would
   put values on another grid than onnxruntime's. A half-precision input under autocast (the
   output of a convolution there) is read as it is and the result stored back in its precision
   (one scale, ``FUSED``, on CUDA): what autocast would cast it to for the next layer anyway, at
   half the memory traffic of a float32 copy each way. The scale's gradient still sums in float32.
   Not on the CPU, whose fused kernel rounds bfloat16 inputs in bfloat16 (a code off by one).
4. ``axis``: one scale per slice along it (per-channel weights, per-channel activations of
   ``passes/channel_scales.py``); None: one scale.
5. One scale (activations): one fused kernel forward (``FUSED``: torch's fake quantizer with
   tensor parameters, which also gives the mask), and backward the mask and, when the scale
   learns, one reduction for its gradient (``_PerTensor``). The formula written out costs 8
   passes over the tensor forward and more backward, each a kernel; torch's own learnable fake
   quantizers read their parameters on the host (a device sync per call) and cost ~1 ms of CPU
   each on CUDA. Torch multiplies by 1 / scale where QuantizeLinear divides: a value within an ulp
   of a rounding midpoint can land one step away, which the export check's one-step tolerance
   covers. Per-channel scales (weights: small tensors) keep the formula.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["FakeQuant", "round_ste", "codes", "FUSED"]

# (5); False: the formula written out (the tests compare the two; a torch without the fused op)
FUSED = hasattr(torch, "_fake_quantize_per_tensor_affine_cachemask_tensor_qparams")
KEEP_HALF = ("cuda",)  # (3) devices whose fused kernel computes half-precision inputs in float32 (the CPU's: in bfloat16)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity backward (1)."""
    return x + (torch.round(x) - x).detach()


def _grad_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` forward, gradient times ``factor`` backward (2)."""
    return (x - x * factor).detach() + x * factor


class FakeQuant(nn.Module):
    """One quantizer: its scale (trained or observed), zero point and integer range (see module doc)."""

    def __init__(self, scale, zero_point, qmin: int, qmax: int, *, axis: int | None = None,
                 learn: bool = True, weight: bool = False) -> None:
        super().__init__()
        scale = torch.as_tensor(scale, dtype=torch.float32).reshape(-1).clone()
        zero_point = torch.as_tensor(zero_point, dtype=torch.float32).reshape(-1).clone()
        if zero_point.numel() == 1 and scale.numel() > 1:
            zero_point = zero_point.expand_as(scale).clone()
        self.qmin, self.qmax, self.axis = int(qmin), int(qmax), axis
        self.learn, self.weight = bool(learn), bool(weight)
        self.per_tensor = scale.numel() == 1 and axis is None
        if self.learn:  # (2) in the log domain: Adam's steps are then relative, and a scale stays positive
            self.register_buffer("initial_scale", scale.clamp_min(1e-12))
            self.log_scale = nn.Parameter(torch.zeros_like(scale))  # scale = initial * exp(log_scale): exact at 0
        else:
            self.register_buffer("observed_scale", scale)
        self.register_buffer("zero_point", zero_point)
        self.register_buffer("running", torch.zeros(2))  # observed activations: running min, max (2)
        self.observing = not self.learn  # an observed quantizer stops observing when frozen

    @property
    def scale(self) -> torch.Tensor:
        return self.initial_scale * torch.exp(self.log_scale) if self.learn else self.observed_scale

    def _shape(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.axis is None or t.numel() == 1:
            return t.reshape(())
        shape = [1] * x.dim()
        shape[self.axis % x.dim()] = -1
        return t.reshape(shape)

    def _observe(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            if self.weight:  # symmetric, per channel: max |w| / qmax
                dims = [d for d in range(x.dim()) if self.axis is None or d != self.axis % x.dim()]
                amax = x.abs().amax(dim=dims) if dims else x.abs()
                self.observed_scale.copy_((amax.reshape(-1) / self.qmax).clamp_min(1e-12).expand_as(self.observed_scale))
                return
            lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
            if self.running.abs().sum() == 0:
                self.running.copy_(torch.tensor([lo, hi]))
            else:
                self.running.mul_(0.9).add_(0.1 * torch.tensor([lo, hi]))
            lo, hi = float(self.running[0]), float(self.running[1])
            scale = max((hi - lo) / (self.qmax - self.qmin), 1e-12)
            if self.zero_point.abs().sum() == 0 and self.qmin < 0:  # symmetric grid: zero point stays 0
                scale = max(abs(lo), abs(hi)) / self.qmax or 1e-12
                self.observed_scale.fill_(scale)
                return
            self.observed_scale.fill_(scale)
            self.zero_point.fill_(float(min(max(round(self.qmin - lo / scale), self.qmin), self.qmax)))

    def step(self) -> torch.Tensor:
        """The scale in use (positive; no gradient scaling)."""
        return self.scale.detach().clamp_min(1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = FUSED and x.numel() > 0 and self.scale.numel() == 1
        keep = (fused and x.dtype in (torch.float16, torch.bfloat16) and x.device.type in KEEP_HALF
                and torch.is_autocast_enabled(x.device.type))
        with torch.autocast(device_type=x.device.type, enabled=False):  # (3)
            x = x if keep else x.float()
            if self.training and self.observing and (self.weight or self.per_tensor):  # per-channel outputs keep their calibration
                self._observe(x)
            if fused:
                return self._fused(x)
            s = self.scale
            if self.learn and self.training:
                per_scale = x.numel() / max(s.numel(), 1)
                s = _grad_scale(s, 1.0 / math.sqrt(per_scale * self.qmax))
            s = self._shape(x, s.clamp_min(1e-12))
            z = self._shape(x, self.zero_point)
            q = torch.clamp(round_ste(x / s) + z, self.qmin, self.qmax)
            return (q - z) * s

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        """(5) One kernel forward; backward, the mask and (when the scale learns) its reduction."""
        s = self.scale.clamp_min(1e-12)
        factor = 1.0 / math.sqrt(x.numel() * self.qmax)
        return _PerTensor.apply(x, s.reshape(1), self.zero_point.reshape(1).to(torch.int32), self.qmin, self.qmax, factor)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """The integer codes of ``x`` (float tensor of whole numbers), no gradient."""
        return codes(x, self._shape(x, self.step()), self._shape(x, self.zero_point), self.qmin, self.qmax)

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        """Codes back to values on this quantizer's grid."""
        return (q - self._shape(q, self.zero_point)) * self._shape(q, self.step())

    def extra_repr(self) -> str:
        kind = "learned" if self.learn else "observed"
        return f"[{self.qmin}, {self.qmax}], {self.scale.numel()} scale(s) {kind}, axis={self.axis}"


_ENABLED: dict[torch.device, torch.Tensor] = {}


class _PerTensor(torch.autograd.Function):
    """(5) ``(clamp(round(x / s) + z) - z) * s`` as torch's fused fake quantizer with tensor
    parameters (no host sync), and the LSQ gradient of (2): d/ds is ``round(x/s) - x/s`` inside
    the range and ``q - z`` at its ends, i.e. ``(y - x) / s`` and ``y / s``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
                factor: float) -> torch.Tensor:
        enabled = _ENABLED.get(x.device)
        if enabled is None:
            enabled = _ENABLED[x.device] = torch.ones(1, dtype=torch.long, device=x.device)
        y, mask = torch._fake_quantize_per_tensor_affine_cachemask_tensor_qparams(
            x, scale.to(device=x.device, dtype=torch.float32), zero_point.to(x.device), enabled, qmin, qmax)
        ctx.factor = factor
        ctx.save_for_backward(x, y, mask, scale)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        x, y, mask, scale = ctx.saved_tensors
        grad_x = grad * mask if ctx.needs_input_grad[0] else None
        grad_s = None
        if ctx.needs_input_grad[1]:
            step_error = torch.where(mask, y - x, y)  # s * d(y)/ds, small inside the range: no cancellation
            if grad.dtype == torch.float16:  # a scaled float16 gradient times a value can overflow
                grad = grad.float()
            grad_s = (torch.sum(grad * step_error, dtype=torch.float32) * ctx.factor / scale).reshape(scale.shape)
        return grad_x, grad_s, None, None, None, None


def codes(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.clamp(torch.round(x.float() / scale) + zero_point, qmin, qmax)
