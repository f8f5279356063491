"""The 224x224 edge nets for speed benchmarks: MobileNetV2 (width 1.0) and ResNet-18 shapes.

Weights come from a fixed seed (torchvision's initialization scheme). BatchNorm statistics are
then measured on sample photos (``edgeq.zoo.image_data``) and perturbed, so they are non-trivial
(folding matters) and activations keep a realistic scale through the whole depth; logits vary
from image to image as a trained net's do.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgeq.zoo import image_data
from edgeq.zoo.nets import MobileNetV2, ResNet

__all__ = ["mobilenet224", "resnet224", "example_inputs"]

_STATS_IMAGES = 8


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01 * np.sqrt(1000 / m.out_features) * 3)
            nn.init.zeros_(m.bias)


def _finish(model: nn.Module, seed: int) -> nn.Module:
    """Measure BN statistics on sample photos, then perturb BN affine parameters (seeded)."""
    gen = torch.Generator().manual_seed(seed + 1)
    images = torch.from_numpy(image_data.sample_images(_STATS_IMAGES, np.random.default_rng([seed, 99])))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the pass
    model.train()
    with torch.no_grad():
        model(images)
        for bn in bns:
            c = bn.num_features
            bn.weight.copy_(torch.rand(c, generator=gen) * 0.6 + 0.7)
            bn.bias.copy_(torch.randn(c, generator=gen) * 0.1)
            # a layer fed by a BN output measures mean ~0; trained nets never have exactly that
            bn.running_mean.add_(torch.randn(c, generator=gen) * 0.2 * bn.running_var.sqrt())
            bn.momentum = 0.1
    model.eval()
    _center_classifier(model, images)
    return model


def _center_classifier(model: nn.Module, images: torch.Tensor, spread: float = 3.0) -> None:
    """Rescale and re-bias the last Linear so that logits vary between images, not between classes.

    Pooled features of an untrained net share a large common component; without this every image
    would get the same top-1 class, and top-1 agreement would say nothing.
    """
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    captured: list[torch.Tensor] = []
    handle = fc.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
    with torch.no_grad():
        model(images)
        handle.remove()
        features = captured[0]
        centered = (features - features.mean(0)) @ fc.weight.T
        fc.weight.mul_(spread / centered.std().clamp_min(1e-6))
        fc.bias.copy_(-(features.mean(0) @ fc.weight.T))


def mobilenet224(seed: int = 0) -> nn.Module:
    """MobileNetV2 1.0, 3x224x224 -> 1000 (about 3.5M parameters)."""
    torch.manual_seed(seed)
    model = MobileNetV2(in_channels=3, num_classes=1000)
    _init(model)
    return _finish(model, seed)


def resnet224(seed: int = 0) -> nn.Module:
    """ResNet-18, 3x224x224 -> 1000 (about 11.7M parameters)."""
    torch.manual_seed(seed)
    model = ResNet(in_channels=3, num_classes=1000)
    _init(model)
    for m in model.modules():  # zero-ish last BN gamma in each block keeps the residual sum tame
        if hasattr(m, "bn2"):
            nn.init.constant_(m.bn2.weight, 0.5)
    return _finish(model, seed)


def example_inputs() -> tuple[torch.Tensor, ...]:
    return (torch.from_numpy(image_data.sample_images(1, np.random.default_rng([0, 7]))),)
