"""The two digits classifiers: architectures and loading of their committed checkpoints."""

from __future__ import annotations

import os

import torch
from torch import nn

from edgeq.errors import ModelLoadError
from edgeq.zoo.nets import MobileNetV2, ResNet

__all__ = ["ARCHITECTURES", "CHECKPOINT_DIR", "checkpoint_path", "load"]

CHECKPOINT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints")


def digits_mobilenet() -> nn.Module:
    """MobileNetV2-style, 1x32x32 -> 10: stride-1 stem, 3 inverted-residual stages, 128-wide head."""
    stages = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 1))
    return MobileNetV2(in_channels=1, num_classes=10, stem=16, stem_stride=1, stages=stages, head=128, dropout=0.1)


def digits_resnet() -> nn.Module:
    """ResNet-style, 1x32x32 -> 10: 3x3 stem, BasicBlock stages of width 16, 32, 64."""
    return ResNet(in_channels=1, num_classes=10, widths=(16, 32, 64), blocks=(1, 1, 1), imagenet_stem=False)


ARCHITECTURES = {"digits_mobilenet": digits_mobilenet, "digits_resnet": digits_resnet}


def checkpoint_path(name: str) -> str:
    return os.path.join(CHECKPOINT_DIR, f"{name}.pt")


def load(name: str) -> nn.Module:
    """Build ``name`` and load its committed state_dict (``weights_only=True``), in eval mode."""
    model = ARCHITECTURES[name]()
    path = checkpoint_path(name)
    if not os.path.isfile(path):
        raise ModelLoadError(f"checkpoint {path} is missing: run `python -m edgeq.zoo.train_digits` to train it")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
