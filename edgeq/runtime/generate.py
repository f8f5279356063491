"""Text generation and perplexity with a decoder whose KV cache is an input and an output.

    lm = DecoderLM("model.onnx", threads=1)
    for token in lm.generate(lm.encode("def f(x):"), max_new_tokens=64):   # greedy; streamed
        print(lm.decode([token]), end="")
    lm.perplexity(text)                                                 # exp(mean next-token NLL)

The model's contract (``edgeq.zoo.lm``'s export, and any graph written the same way): inputs
``input_ids`` (batch, seq) int64, ``past_key`` and ``past_value`` (layers, batch, heads, past,
head_dim); outputs ``logits`` (batch, seq, vocab), ``present_key``, ``present_value`` (past + seq
along axis 3). One graph serves prefill (empty past) and decode (one token). The tokenizer is
named in the model's metadata: ``edgeq.tokenizer`` = ``bytes`` (UTF-8 bytes are the tokens) or
``hf`` (a Hugging Face tokenizer.json, its text in ``edgeq.tokenizer_json``, read with the
``tokenizers`` package: ``edgeq export-llm`` writes it); ``edgeq.max_length`` bounds the
positions; ``edgeq.eos_token_id`` (comma-separated) ends a generation. ``edgeq quantize`` keeps
the metadata, so the quantized model needs nothing beside it either.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from edgeq.errors import InputError

__all__ = ["DecoderLM", "DecodeTimes", "TextStream", "log_softmax"]

INPUTS = ("input_ids", "past_key", "past_value")
OUTPUTS = ("logits", "present_key", "present_value")


class DecodeTimes:
    """Wall times of one ``generate``: the prefill and each decode step (seconds)."""

    def __init__(self) -> None:
        self.prefill_s = 0.0
        self.prompt_tokens = 0
        self.steps: list[float] = []

    @property
    def decode_tokens_per_s(self) -> float:
        return len(self.steps) / sum(self.steps) if self.steps else 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s else 0.0


class DecoderLM:
    """A decoder model file (see the module docstring) on onnxruntime's CPU provider (or ``providers``)."""

    def __init__(self, model: Any, *, providers: Any = ("cpu",), threads: int | None = 1) -> None:
        from edgeq.runtime.session import Session

        self.session = Session(model, providers=providers, threads=threads)
        specs = {s.name: s for s in self.session.input_specs}
        names = {s.name for s in self.session.output_specs}
        if set(INPUTS) - set(specs) or set(OUTPUTS) - names:
            raise InputError(f"not a decoder with a KV cache: it needs inputs {', '.join(INPUTS)} and outputs "
                                   f"{', '.join(OUTPUTS)} (found inputs {', '.join(specs)}); export it with "
                                   "edgeq export tiny_lm or the same signature")
        shape = specs["past_key"].shape
        if len(shape) != 5 or not all(isinstance(d, int) for d in (shape[0], shape[2], shape[4])):
            raise InputError(f"past_key must be (layers, batch, heads, past, head_dim) with fixed layers, heads "
                                   f"and head_dim, not {shape}")
        self.layers, self.heads, self.head_dim = shape[0], shape[2], shape[4]
        meta = self.session.ort_session.get_modelmeta().custom_metadata_map
        self.tokenizer = meta.get("edgeq.tokenizer", "")
        self.max_length = int(meta.get("edgeq.max_length", "0")) or None
        self.eos_ids = frozenset(int(t) for t in meta.get("edgeq.eos_token_id", "").split(",") if t.strip())
        self._tokenizer_json = meta.get("edgeq.tokenizer_json", "")
        self._hf: Any = None
        self.times = DecodeTimes()

    # -- tokens ------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        if self.tokenizer == "hf":
            return list(self._hf_tokenizer().encode(text).ids)
        self._bytes_only()
        return list(text.encode("utf-8"))

    def decode(self, tokens: list[int]) -> str:
        if self.tokenizer == "hf":
            return self._hf_tokenizer().decode([int(t) for t in tokens], skip_special_tokens=True)
        self._bytes_only()
        return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")

    def _hf_tokenizer(self) -> Any:
        if self._hf is None:
            try:
                from tokenizers import Tokenizer
            except ImportError:
                raise InputError("this model's tokenizer is a Hugging Face tokenizer.json: pip install tokenizers "
                                 "(or 'edgeq[llm]')") from None
            if not self._tokenizer_json:
                raise InputError("the model's metadata names tokenizer 'hf' but holds no edgeq.tokenizer_json: "
                                 "export it again with edgeq export-llm")
            try:
                self._hf = Tokenizer.from_str(self._tokenizer_json)
            except Exception as e:  # noqa: BLE001 - the tokenizers package raises its own Exception
                raise InputError(f"the model's tokenizer.json does not load ({str(e).splitlines()[0]}): export it "
                                 "again with edgeq export-llm") from None
        return self._hf

    def _bytes_only(self) -> None:
        if self.tokenizer != "bytes":
            raise InputError(f"the model's metadata names tokenizer {self.tokenizer or '(none)'!r}; edgeq reads "
                                   "'bytes' (UTF-8 bytes as tokens) and 'hf' (a tokenizer.json in the metadata, "
                                   "as edgeq export-llm writes it): pass token ids instead of text")

    # -- running -----------------------------------------------------------------------------------
    def _empty(self, batch: int = 1) -> np.ndarray:
        return np.zeros((self.layers, batch, self.heads, 0, self.head_dim), np.float32)

    def step(self, ids: np.ndarray, past: tuple[np.ndarray, np.ndarray] | None = None):
        """(logits, (present_key, present_value)) for ``ids`` (batch, seq) after ``past``."""
        if past is None:
            past = (self._empty(ids.shape[0]),) * 2
        total = past[0].shape[3] + ids.shape[1]
        if self.max_length and total > self.max_length:
            raise InputError(f"{total} tokens exceed the model's {self.max_length} positions: shorten the prompt or "
                             "--max-new-tokens")
        out = self.session.run({"input_ids": ids.astype(np.int64), "past_key": past[0], "past_value": past[1]},
                               checked=True)
        return out["logits"], (out["present_key"], out["present_value"])

    def generate(self, prompt: list[int], max_new_tokens: int, *, temperature: float = 0.0, top_k: int = 0,
                 seed: int = 0, on_token: Callable[[int], None] | None = None,
                 stop_at_eos: bool = True) -> Iterator[int]:
        """New tokens one at a time (greedy where ``temperature`` is 0; else sampled, from the
        ``top_k`` most likely where given), the KV cache kept between steps; an end-of-text token
        (``eos_ids``) is the last one given, unless ``stop_at_eos`` is False."""
        if not prompt:
            raise InputError("the prompt is empty: give at least one token")
        rng = np.random.default_rng(seed)
        self.times = DecodeTimes()
        start = time.perf_counter()
        logits, past = self.step(np.asarray(prompt, np.int64)[None])
        self.times.prefill_s, self.times.prompt_tokens = time.perf_counter() - start, len(prompt)
        for i in range(max_new_tokens):
            token = _pick(logits[0, -1], temperature, top_k, rng)
            if on_token is not None:
                on_token(token)
            yield token
            if i + 1 == max_new_tokens or (stop_at_eos and token in self.eos_ids):
                break
            start = time.perf_counter()
            logits, past = self.step(np.asarray([[token]], np.int64), past)
            self.times.steps.append(time.perf_counter() - start)

    def perplexity(self, tokens: list[int], window: int | None = None) -> float:
        """exp(mean negative log-likelihood of each token given those before it), over windows of
        ``window`` tokens (default: the model's positions, at most 512), each scored from scratch
        (the first tokens of a window see less context than the last: the usual windowed figure)."""
        window = window or min(self.max_length or 512, 512)
        if len(tokens) < 2:
            raise InputError("perplexity needs at least two tokens of text")
        total, count = 0.0, 0
        for start in range(0, len(tokens) - 1, window):
            chunk = np.asarray(tokens[start : start + window + 1], np.int64)
            if len(chunk) < 2:
                break
            logits, _ = self.step(chunk[None, :-1])
            logp = log_softmax(logits[0].astype(np.float64))
            total -= float(logp[np.arange(len(chunk) - 1), chunk[1:]].sum())
            count += len(chunk) - 1
        return float(np.exp(total / count))


class TextStream:
    """Text of generated tokens as they come: ``push(token)`` gives what is new since the last call.
    A character that spans tokens (a UTF-8 byte, a byte-level BPE piece) is given once whole, or
    after WAIT tokens as it decodes."""

    WAIT = 4

    def __init__(self, lm: DecoderLM) -> None:
        self.lm, self.tokens, self.shown, self.waiting = lm, [], 0, 0

    def push(self, token: int) -> str:
        self.tokens.append(int(token))
        text = self.lm.decode(self.tokens)
        if text.endswith("\ufffd") and self.waiting < self.WAIT:
            self.waiting += 1
            return ""
        self.waiting = 0
        new, self.shown = text[self.shown :], len(text)
        return new


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _pick(logits: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    if top_k > 0 and top_k < len(z):
        z[np.argsort(z)[:-top_k]] = -np.inf
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))
