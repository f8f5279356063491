"""Train the ``textdet`` text detector reproducibly and write its checkpoint.

    python -m edgeq.zoo.train_textdet [--epochs 10] [--train 1200]

CPU, one thread, fixed seeds and deterministic algorithms. Data: ``edgeq.zoo.synth_text`` training
stream (never used for calibration or evaluation); augmentation: random horizontal flips. Loss:
binary cross-entropy plus dice on the probability map (DBNet's probability-map losses). Prints
the held-out IoU of the map at threshold 0.3 against the true text masks.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from edgeq.zoo import synth_text
from edgeq.zoo.checkpoint import training_main
from edgeq.zoo.textdet import CHECKPOINT, build

__all__ = ["train", "heldout_iou", "main"]

logger = logging.getLogger(__name__)


def _loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = nn.functional.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), target)
    inter = (prob * target).sum()
    dice = 1 - (2 * inter + 1) / (prob.sum() + target.sum() + 1)
    return bce + dice


def heldout_iou(model: nn.Module, n: int = 200, threshold: float = 0.3) -> float:
    """IoU of ``model``'s map above ``threshold`` with the true masks of ``eval_data(n)``."""
    from edgeq.zoo.metrics import mask_iou

    x = np.concatenate([f["input"] for f in synth_text.eval_data(n)])
    model.eval()
    with torch.no_grad():
        prob = torch.cat([model(torch.from_numpy(x[i : i + 32])) for i in range(0, len(x), 32)]).numpy()
    return mask_iou(synth_text.eval_masks(n) > 0.5, prob > threshold)


def train(epochs: int = 10, n_train: int = 1200, seed: int = 0, batch_size: int = 16, lr: float = 4e-3) -> nn.Module:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x, y = synth_text.training_set(n_train, seed)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    model = build()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((n_train + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n_train, generator=gen)
        for start in range(0, n_train, batch_size):
            idx = order[start : start + batch_size]
            xb, yb = x_t[idx], y_t[idx]
            if torch.rand((), generator=gen) < 0.5:
                xb, yb = xb.flip(-1), yb.flip(-1)
            opt.zero_grad()
            loss = _loss(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
        logger.info("textdet epoch %d loss %.4f", epoch + 1, float(loss.detach()))
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    training_main(argv, description=__doc__.splitlines()[0], train=train, default_train=1200, what="images",
                  checkpoint=CHECKPOINT,
                  summary=lambda model: f"textdet: held-out IoU@0.3 vs true masks {heldout_iou(model):.4f} (200 images)")


if __name__ == "__main__":
    main()
