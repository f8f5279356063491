"""A small byte-level decoder language model with its KV cache as inputs and outputs, and its text.

    input_ids (batch, seq) int64, past_key / past_value (layers, batch, heads, past, head_dim)
      -> logits (batch, seq, 256), present_key / present_value (layers, batch, heads, past + seq, head_dim)

One graph serves prefill (past of length 0, the prompt as ``seq``) and decode (``seq`` 1): GPT-style
pre-norm blocks (LayerNorm, causal Softmax attention over past + new, GELU feed-forward), 256 learned
positions offset by the past length, a separate head. Bytes are the tokens (UTF-8, vocabulary 256):
no tokenizer file, and the exported model says so in its metadata (``edgeq.tokenizer: bytes``).

Text: the topics of Python's own reference documentation (``pydoc_data.topics`` of CPython 3.11,
shipped here as ``data/pydoc_topics.json.gz``): every fifth topic (sorted by name) is held out for evaluation, the rest trains and
calibrates. ``python -m edgeq.zoo.train_lm`` trains the committed checkpoint.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["VOCAB", "DIM", "HEADS", "LAYERS", "MAX_LEN", "build", "load", "text", "example_inputs",
           "calibration_data", "eval_data", "empty_past", "METADATA"]

VOCAB = 256
DIM = 192
HEADS = 6
LAYERS = 4
FFN = 768
MAX_LEN = 256  # positions; training windows are this long, so that every position is trained
WINDOW = 128  # tokens per calibration/evaluation sample
METADATA = {"edgeq.tokenizer": "bytes", "edgeq.max_length": str(MAX_LEN)}


def text(split: str) -> str:
    """``"train"`` or ``"eval"``: the documentation topics, every fifth one (sorted) held out.
    The topics are shipped (``data/pydoc_topics.json.gz``, from CPython 3.11's ``pydoc_data``,
    PSF license) so that every Python version trains and judges on the same text."""
    import gzip
    import json
    import os

    path = os.path.join(os.path.dirname(__file__), "data", "pydoc_topics.json.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        topics = json.load(f)["topics"]
    keys = sorted(topics)
    chosen = [k for i, k in enumerate(keys) if (i % 5 == 4) == (split == "eval")]
    return "\n\n".join(topics[k] for k in chosen)


def empty_past(batch: int = 1, layers: int = LAYERS, heads: int = HEADS, head_dim: int = DIM // HEADS) -> np.ndarray:
    return np.zeros((layers, batch, heads, 0, head_dim), np.float32)


def _windows(split: str, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    data = np.frombuffer(text(split).encode("utf-8"), np.uint8)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(data) - WINDOW, n)
    return [{"input_ids": data[s : s + WINDOW].astype(np.int64)[None], "past_key": empty_past(),
             "past_value": empty_past()} for s in starts]


def calibration_data(n: int = 32, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Windows of ``WINDOW`` bytes of the training text, empty past (prefill)."""
    return _windows("train", n, seed)


def eval_data(n: int = 32, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """Windows of the held-out topics."""
    return _windows("eval", n, seed)


def _torch_classes():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, dim: int, heads: int, ffn: int) -> None:
            super().__init__()
            self.heads, self.head_dim = heads, dim // heads
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))

        def forward(self, x, past_k, past_v, mask):
            b, s, d = x.shape
            q, k, v = self.qkv(self.norm1(x)).reshape(b, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
            scores = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(self.head_dim)) + mask
            x = x + self.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, d))
            return x + self.ffn(self.norm2(x)), k, v

    class TinyLM(nn.Module):
        def __init__(self, dim: int = DIM, heads: int = HEADS, layers: int = LAYERS, ffn: int = FFN) -> None:
            super().__init__()
            self.tokens = nn.Embedding(VOCAB, dim)
            self.positions = nn.Embedding(MAX_LEN, dim)
            self.blocks = nn.ModuleList(Block(dim, heads, ffn) for _ in range(layers))
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, VOCAB, bias=False)

        def forward(self, input_ids, past_key, past_value):
            s, past = input_ids.shape[1], past_key.shape[3]
            positions = torch.arange(s, device=input_ids.device) + past
            x = self.tokens(input_ids) + self.positions(positions)[None]
            rows = torch.arange(s, device=input_ids.device)[:, None] + past
            cols = torch.arange(past + s, device=input_ids.device)[None, :]
            mask = torch.where(cols <= rows, 0.0, -1e4)[None, None]  # causal over past + new
            keys, values = [], []
            for i, block in enumerate(self.blocks):
                x, k, v = block(x, past_key[i], past_value[i], mask)
                keys.append(k)
                values.append(v)
            return self.head(self.norm(x)), torch.stack(keys), torch.stack(values)

    return TinyLM


def build(**sizes: Any):
    """The decoder with fixed-seed weights (``sizes``: dim, heads, layers, ffn; a bigger random
    instance for speed measurements)."""
    import torch

    torch.manual_seed(0)
    return _torch_classes()(**sizes)


def load():
    """The trained decoder (the committed checkpoint), in eval mode."""
    import os

    import torch

    model = build()
    path = os.path.join(os.path.dirname(__file__), "checkpoints", "tiny_lm.pt")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


def example_inputs():
    import torch

    ids = torch.tensor(list(b"def f(x):"), dtype=torch.int64)[None]
    past = torch.zeros((LAYERS, 1, HEADS, 3, DIM // HEADS))
    return ids, past, past.clone()
