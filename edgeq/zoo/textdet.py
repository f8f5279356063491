"""``textdet``: a small DBNet-style text detector and the loading of its committed checkpoint.

3x128x128 image -> 1x128x128 text probability map (Sigmoid). Like mobile OCR detectors (DBNet on a
MobileNetV3 backbone): a strided Conv-BN-ReLU stem, depthwise-separable stages (strides 4, 8, 16;
ReLU early, Hardswish and squeeze-excite with Hardsigmoid late), an FPN neck (1x1 laterals,
top-down nearest Resize + Add, 3x3 smoothing, every scale resized to stride 4 and concatenated
as DBNet does), and a head of Conv then two stride-2 ConvTranspose back to full resolution.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from edgeq.errors import ModelLoadError

__all__ = ["TextDetector", "DepthwiseSeparable", "SqueezeExcite", "CHECKPOINT", "build", "load", "example_inputs"]

CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints", "textdet.pt")


def _cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type = nn.ReLU) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), act())


class SqueezeExcite(nn.Module):
    """MobileNetV3's channel attention: global average pool, 1x1 reduce, ReLU, 1x1, Hardsigmoid, Mul."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // reduction, 1)
        self.expand = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * nn.functional.hardsigmoid(self.expand(nn.functional.relu(self.reduce(w))))


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 (BN, act), optional squeeze-excite, pointwise 1x1 (BN, act); residual when shapes allow.

    ``act`` is ReLU in the early stages and Hardswish in the late ones, as in MobileNetV3.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, act: type = nn.ReLU, se: bool = False) -> None:
        super().__init__()
        self.dw = _cbr(cin, cin, 3, stride, groups=cin, act=act)
        self.se = SqueezeExcite(cin) if se else nn.Identity()
        self.pw = _cbr(cin, cout, 1, act=act)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.se(self.dw(x)))
        return x + y if self.residual else y


class TextDetector(nn.Module):
    def __init__(self, neck: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(_cbr(3, 16, 3, 2), DepthwiseSeparable(16, 24))  # /2
        self.stage2 = nn.Sequential(DepthwiseSeparable(24, 32, 2), DepthwiseSeparable(32, 32))  # /4
        hs = nn.Hardswish
        self.stage3 = nn.Sequential(DepthwiseSeparable(32, 48, 2, hs), DepthwiseSeparable(48, 48, 1, hs, se=True))  # /8
        self.stage4 = nn.Sequential(DepthwiseSeparable(48, 64, 2, hs, se=True), DepthwiseSeparable(64, 64, 1, hs, se=True),
                                    DepthwiseSeparable(64, 64, 1, hs, se=True))  # /16
        self.lateral = nn.ModuleList([nn.Conv2d(c, neck, 1) for c in (32, 48, 64)])
        self.smooth = nn.ModuleList([_cbr(neck, neck // 2) for _ in range(3)])
        self.head = nn.Sequential(
            _cbr(3 * (neck // 2), neck),
            nn.ConvTranspose2d(neck, 16, 2, 2, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(16, 1, 2, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = nn.functional.interpolate
        c2 = self.stage2(self.stem(x))
        c3 = self.stage3(c2)
        c4 = self.stage4(c3)
        p4 = self.lateral[2](c4)
        p3 = self.lateral[1](c3) + up(p4, scale_factor=2.0, mode="nearest")
        p2 = self.lateral[0](c2) + up(p3, scale_factor=2.0, mode="nearest")
        s2, s3, s4 = (m(p) for m, p in zip(self.smooth, (p2, p3, p4)))
        fused = torch.cat([s2, up(s3, scale_factor=2.0, mode="nearest"), up(s4, scale_factor=4.0, mode="nearest")], 1)
        return torch.sigmoid(self.head(fused))


def build() -> TextDetector:
    return TextDetector()


def load() -> nn.Module:
    """The detector with its committed state_dict (``weights_only=True``), in eval mode."""
    model = build()
    if not os.path.isfile(CHECKPOINT):
        raise ModelLoadError(f"checkpoint {CHECKPOINT} is missing: run `python -m edgeq.zoo.train_textdet` to train it")
    model.load_state_dict(torch.load(CHECKPOINT, map_location="cpu", weights_only=True))
    return model.eval()


def example_inputs() -> tuple[torch.Tensor, ...]:
    from edgeq.zoo import synth_text

    return (torch.from_numpy(synth_text.eval_data(1, seed=0)[0]["input"]),)
