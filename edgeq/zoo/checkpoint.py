"""Writing a trained model's weights: the one way the training scripts save a checkpoint, and
the command line the single-model training scripts share."""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable
from typing import Any

__all__ = ["save_checkpoint", "training_main"]


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


def training_main(argv: list[str] | None, *, description: str, train: Callable[..., Any], default_train: int,
                  what: str, checkpoint: str, summary: Callable[[Any], str], default_epochs: int = 10) -> None:
    """``--epochs N --train N --out PATH``: train, save atomically, print ``summary(model)`` with
    the size and the time (``python -m edgeq.zoo.train_kws`` and ``edgeq.zoo.train_textdet``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=default_epochs)
    parser.add_argument("--train", type=int, default=default_train, help=f"training {what}")
    parser.add_argument("--out", default=checkpoint)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    model = train(epochs=args.epochs, n_train=args.train)
    seconds = time.perf_counter() - start
    saved = save_checkpoint(model, args.out)
    print(f"{summary(model)}, {saved}, trained in {seconds:.1f} s -> {args.out}")
