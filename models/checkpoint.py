"""Writing a trained model's weights: the one way the training scripts save a checkpoint."""

from __future__ import annotations

import os

__all__ = ["save_checkpoint"]


def save_checkpoint(model, path: str) -> str:
    """Write ``model.state_dict()`` to ``path`` atomically (a .tmp beside it, then a rename);
    return ``"N params, K KiB"`` for the training summary line."""
    import torch

    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(model.state_dict(), path + ".tmp")
    os.replace(path + ".tmp", path)
    params = sum(p.numel() for p in model.parameters())
    return f"{params} params, {os.path.getsize(path) / 1024:.0f} KiB"
