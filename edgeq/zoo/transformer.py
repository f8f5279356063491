"""A small transformer encoder with fixed-seed weights, and its token data (numpy only).

input_ids (batch, seq) int64, attention_mask (batch, seq) int64 -> last_hidden_state
(batch, seq, 128). Token embedding + learned positions, 2 pre-norm-free BERT-style layers
(multi-head Softmax attention with an additive mask, LayerNorm, GELU feed-forward).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["VOCAB", "DIM", "MAX_LEN", "SEQ_LEN", "TinyTransformer", "build", "token_feeds", "example_inputs"]  # noqa: F822 (TinyTransformer: module __getattr__, torch imported lazily)

VOCAB = 1000
DIM = 128
HEADS = 4
LAYERS = 2
FFN = 512
MAX_LEN = 128
SEQ_LEN = 32  # length of generated feeds (real tokens, then padding)


def _torch_classes():
    import torch
    from torch import nn

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(DIM, 3 * DIM)
            self.out = nn.Linear(DIM, DIM)

        def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
            b, s, _ = x.shape
            q, k, v = self.qkv(x).reshape(b, s, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
            scores = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(DIM // HEADS)) + mask_bias
            context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, DIM)
            return self.out(context)

    class EncoderLayer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = SelfAttention()
            self.norm1 = nn.LayerNorm(DIM)
            self.ffn = nn.Sequential(nn.Linear(DIM, FFN), nn.GELU(), nn.Linear(FFN, DIM))
            self.norm2 = nn.LayerNorm(DIM)

        def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
            x = self.norm1(x + self.attn(x, mask_bias))
            return self.norm2(x + self.ffn(x))

    class TinyTransformer(nn.Module):
        """Token + position embeddings, LayerNorm, then ``LAYERS`` encoder layers."""

        def __init__(self) -> None:
            super().__init__()
            self.tokens = nn.Embedding(VOCAB, DIM)
            self.positions = nn.Embedding(MAX_LEN, DIM)
            self.norm = nn.LayerNorm(DIM)
            self.layers = nn.ModuleList(EncoderLayer() for _ in range(LAYERS))

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            x = self.norm(self.tokens(input_ids) + self.positions(positions))
            # (batch, 1, 1, seq): 0 where attended, -10000 on padding (finite: no NaN on all-pad rows)
            mask_bias = (1.0 - attention_mask.to(x.dtype))[:, None, None, :] * -10000.0
            for layer in self.layers:
                x = layer(x, mask_bias)
            return x

    return TinyTransformer


def __getattr__(name: str):
    if name == "TinyTransformer":
        return _torch_classes()
    raise AttributeError(name)


def build(seed: int = 0):
    """The model with fixed-seed weights (BERT-like init, non-trivial LayerNorm affine), eval mode."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = _torch_classes()()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.normal_(0.0, 0.05, generator=gen)
                if isinstance(m, nn.Linear):
                    m.bias.normal_(0.0, 0.02, generator=gen)
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(1.0 + 0.1 * torch.randn(DIM, generator=gen))
                m.bias.copy_(0.05 * torch.randn(DIM, generator=gen))
    return model.eval()


def _zipf() -> np.ndarray:
    weights = 1.0 / (np.arange(VOCAB - 5) + 3.0) ** 1.1
    return weights / weights.sum()


def token_feeds(n: int, rng: np.random.Generator, seq_len: int = SEQ_LEN) -> list[dict[str, np.ndarray]]:
    """``n`` feeds of batch 1: Zipf-distributed ids 5..999 (like real text), lengths 6..seq_len, 0-padded."""
    feeds = []
    for _ in range(n):
        length = int(rng.integers(6, seq_len + 1))
        ids = np.zeros((1, seq_len), dtype=np.int64)
        ids[0, 0] = 1  # a [CLS]-like start token
        ids[0, 1:length] = rng.choice(VOCAB - 5, size=length - 1, p=_zipf()) + 5
        mask = np.zeros((1, seq_len), dtype=np.int64)
        mask[0, :length] = 1
        feeds.append({"input_ids": ids, "attention_mask": mask})
    return feeds


def calibration_data(n: int = 32, seed: int = 0) -> list[dict[str, np.ndarray]]:
    return token_feeds(n, np.random.default_rng([seed, 0]))


def eval_data(n: int = 200, seed: int = 1) -> list[dict[str, np.ndarray]]:
    return token_feeds(n, np.random.default_rng([seed, 1]))


def example_inputs():
    import torch

    feed = token_feeds(1, np.random.default_rng([0, 7]))[0]
    return torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"])
