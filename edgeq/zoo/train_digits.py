"""Train the digits classifiers reproducibly and write their checkpoints.

    python -m edgeq.zoo.train_digits [--only digits_mobilenet] [--epochs 15]

CPU, one thread, fixed seeds and deterministic algorithms: the same torch version gives the same
weights. Data: the training split of ``edgeq.zoo.digits_data``; augmentation: random shifts of up to
2 pixels. Prints held-out top-1 accuracy; checkpoints are state_dicts under edgeq/zoo/checkpoints/.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
import torch
from torch import nn

from edgeq.zoo import digits_data
from edgeq.zoo.checkpoint import save_checkpoint
from edgeq.zoo.digits import ARCHITECTURES, checkpoint_path

__all__ = ["train", "accuracy", "main"]

logger = logging.getLogger(__name__)


def _shift(batch: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Shift each image by a random (dy, dx) in [-max_shift, max_shift], filling with background."""
    pad = nn.functional.pad(batch, [max_shift] * 4, value=float(batch.min()))
    size = batch.shape[-1]
    out = torch.empty_like(batch)
    offsets = torch.randint(0, 2 * max_shift + 1, (len(batch), 2), generator=gen)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = pad[i, :, dy : dy + size, dx : dx + size]
    return out


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on images ``x`` and labels ``y``."""
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.array(x)))
    return float((logits.argmax(1).numpy() == y).mean())


def train(name: str, epochs: int = 15, seed: int = 0, batch_size: int = 64, lr: float = 3e-3) -> nn.Module:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x, y, _, _ = digits_data.split()
    x_t, y_t = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y))
    model = ARCHITECTURES[name]()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(_shift(x_t[idx], gen)), y_t[idx])
            loss.backward()
            opt.step()
            sched.step()
        logger.info("%s epoch %d loss %.4f", name, epoch + 1, float(loss.detach()))
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(ARCHITECTURES), action="append")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out-dir", default=None, help="default: edgeq/zoo/checkpoints")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _, _, hx, hy = digits_data.split()
    for name in args.only or sorted(ARCHITECTURES):
        start = time.perf_counter()
        model = train(name, epochs=args.epochs)
        seconds = time.perf_counter() - start
        path = checkpoint_path(name) if args.out_dir is None else os.path.join(args.out_dir, f"{name}.pt")
        saved = save_checkpoint(model, path)
        print(f"{name}: held-out top-1 {accuracy(model, hx, hy):.4f} ({len(hy)} images), "
              f"{saved}, trained in {seconds:.1f} s -> {path}")


if __name__ == "__main__":
    main()
