"""``kws``: a DS-CNN keyword spotter with attention pooling, and the loading of its checkpoint.

1x1x40x64 normalized log-mel features -> 12 class logits (``edgeq.zoo.synth_speech.CLASSES``).
Like the DS-CNN models of "Hello Edge" (Zhang et al. 2017): a strided 10x4 Conv-BN-ReLU, four
depthwise-separable blocks, then -- instead of global average pooling -- attention pooling over
time (frequency mean, 1x1 Conv scores, Softmax over frames, weighted sum) and a Linear layer.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from edgeq.errors import ModelLoadError

__all__ = ["KeywordSpotter", "CHECKPOINT", "build", "load", "example_inputs"]

CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints", "kws.pt")


class _DSBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class KeywordSpotter(nn.Module):
    def __init__(self, channels: int = 48, blocks: int = 4, num_classes: int = 12) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels, (10, 4), (2, 2), (5, 1), bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*(_DSBlock(channels) for _ in range(blocks)))
        self.attention = nn.Conv1d(channels, 1, 1)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x)).mean(dim=2)  # (B, C, T): average over frequency
        weights = torch.softmax(self.attention(h), dim=-1)  # (B, 1, T)
        pooled = (h * weights).sum(dim=-1)  # (B, C)
        return self.classifier(self.dropout(pooled))


def build() -> KeywordSpotter:
    return KeywordSpotter()


def load() -> nn.Module:
    """The keyword spotter with its committed state_dict (``weights_only=True``), in eval mode."""
    model = build()
    if not os.path.isfile(CHECKPOINT):
        raise ModelLoadError(f"checkpoint {CHECKPOINT} is missing: run `python -m edgeq.zoo.train_kws` to train it")
    model.load_state_dict(torch.load(CHECKPOINT, map_location="cpu", weights_only=True))
    return model.eval()


def example_inputs() -> tuple[torch.Tensor, ...]:
    from edgeq.zoo import synth_speech

    return (torch.from_numpy(synth_speech.eval_data(1, seed=0)[0]["input"]),)
