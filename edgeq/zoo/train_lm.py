"""Train the byte-level decoder (``edgeq.zoo.lm``) on the training split of Python's reference
documentation topics; write ``checkpoints/tiny_lm.pt`` (fp16 weights).

    python -m edgeq.zoo.train_lm [--steps 3000] [--batch 64] [--device cuda] [--out PATH]

The committed checkpoint: ``--steps 1200 --batch 8`` on 2 CPU cores (about 11 minutes, 2026-12-05;
the GPU machine was not to be had).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

from edgeq.zoo.lm import MAX_LEN, build, text

WINDOW = MAX_LEN  # every position trained (windows shorter than the positions leave the rest untrained)

__all__ = ["train", "main"]


def train(steps: int = 800, batch: int = 32, lr: float = 3e-3, seed: int = 0, log_every: int = 100,
          device: str = "cpu"):
    import torch

    torch.manual_seed(seed)
    data = torch.from_numpy(np.frombuffer(text("train").encode("utf-8"), np.uint8).astype(np.int64))
    held = torch.from_numpy(np.frombuffer(text("eval").encode("utf-8"), np.uint8).astype(np.int64))
    data, held = data.to(device), held.to(device)
    model = build().to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(seed)
    empty = torch.zeros((len(model.blocks), batch, model.blocks[0].heads, 0, model.blocks[0].head_dim), device=device)

    def loss_on(source, n):
        starts = torch.randint(0, len(source) - WINDOW - 1, (n,), generator=gen).tolist()
        x = torch.stack([source[s : s + WINDOW] for s in starts])
        y = torch.stack([source[s + 1 : s + WINDOW + 1] for s in starts])
        logits, _, _ = model(x, empty[:, :n], empty[:, :n])
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    start = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:  # warm-up, then cosine to a tenth
            warm = min(1.0, (step + 1) / 50)
            group["lr"] = lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        loss = loss_on(data, batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            with torch.no_grad():
                model.eval()
                held_loss = float(loss_on(held, batch))
                model.train()
            train_loss = float(loss.detach())
            print(f"step {step + 1}: train {train_loss:.3f}, held-out {held_loss:.3f} nats/byte "
                  f"(perplexity {math.exp(held_loss):.2f}), {time.perf_counter() - start:.0f} s", flush=True)
    return model.cpu().eval()


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "checkpoints", "tiny_lm.pt"))
    args = parser.parse_args(argv)
    model = train(args.steps, args.batch, device=args.device)
    state = {k: v.half() for k, v in model.state_dict().items()}
    torch.save(state, args.out + ".tmp")
    os.replace(args.out + ".tmp", args.out)
    print(f"{sum(p.numel() for p in model.parameters())} params, {os.path.getsize(args.out) / 1024:.0f} KiB -> {args.out}")


if __name__ == "__main__":
    main()
