"""Train the ``kws`` keyword spotter reproducibly and write its checkpoint.

    python -m edgeq.zoo.train_kws [--epochs 10] [--train 2400]

CPU, one thread, fixed seeds and deterministic algorithms. Data: ``edgeq.zoo.synth_speech``
training stream (never used for calibration or evaluation); augmentation: random time shifts of
up to 6 frames (circular) and SpecAugment-style masking of up to 5 mel bands. Prints held-out
top-1 accuracy.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from edgeq.zoo import synth_speech
from edgeq.zoo.checkpoint import training_main
from edgeq.zoo.kws import CHECKPOINT, build

__all__ = ["train", "heldout_accuracy", "main"]

logger = logging.getLogger(__name__)


def heldout_accuracy(model: nn.Module, n: int = 600) -> float:
    """Top-1 accuracy of ``model`` on ``eval_data(n)`` against ``eval_labels(n)``."""
    x = np.concatenate([f["input"] for f in synth_speech.eval_data(n)])
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    return float((logits.argmax(1) == synth_speech.eval_labels(n)).mean())


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    shift = int(torch.randint(-6, 7, (), generator=gen))
    x = torch.roll(x, shift, dims=-1)
    start = int(torch.randint(0, x.shape[2] - 5, (), generator=gen))
    width = int(torch.randint(0, 6, (), generator=gen))
    x = x.clone()
    x[:, :, start : start + width] = 0.0
    return x


def train(epochs: int = 10, n_train: int = 2400, seed: int = 0, batch_size: int = 64, lr: float = 5e-3) -> nn.Module:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x, y = synth_speech.training_set(n_train, seed)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    model = build()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((n_train + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n_train, generator=gen)
        for start in range(0, n_train, batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(_augment(x_t[idx], gen)), y_t[idx])
            loss.backward()
            opt.step()
            sched.step()
        logger.info("kws epoch %d loss %.4f", epoch + 1, float(loss.detach()))
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    training_main(argv, description=__doc__.splitlines()[0], train=train, default_train=2400, what="utterances",
                  checkpoint=CHECKPOINT,
                  summary=lambda model: f"kws: held-out top-1 {heldout_accuracy(model):.4f} (600 utterances)")


if __name__ == "__main__":
    main()
