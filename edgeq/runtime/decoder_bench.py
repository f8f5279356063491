"""``edgeq bench`` for decoder language models (a KV cache as inputs and outputs, see
``runtime.generate``): what a user of a generating model waits for.

    row = measure_decoder("lm.int4.onnx", threads=1, prompt_tokens=64, new_tokens=64, runs=3)

- session start: building the onnxruntime session (MatMulNBits prepacks its weights then);
- time to first token: the prefill of a ``prompt_tokens`` prompt and the first pick;
- prefill tokens/s: the prompt's tokens over that time; decode tokens/s: the new tokens after the
  first, one at a time with the cache; medians over ``runs`` generations after one warm-up;
- peak memory: the process's peak resident set from before the session is built (session
  creation included: prepacking can double a model's weights in memory), measured in a fresh
  process each (``isolated``) so that one model's peak is not another's.

The prompt is a fixed English sentence's UTF-8 bytes, repeated: token ids below 128, which any
vocabulary of at least 128 has.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

__all__ = ["measure_decoder", "measure_decoder_isolated", "is_decoder", "PROMPT"]

PROMPT = b"The quick brown fox jumps over the lazy dog, and the list grows by one. "


def is_decoder(input_names: list[str]) -> bool:
    """The inputs of ``runtime.generate``'s contract are all there."""
    from edgeq.runtime.generate import INPUTS

    return set(INPUTS) <= set(input_names)


def measure_decoder(model: str, threads: int = 1, prompt_tokens: int = 64, new_tokens: int = 64,
                    runs: int = 3) -> dict[str, Any]:
    from edgeq.runtime.bench import _peak_rss, _reset_peak_rss, file_bytes
    from edgeq.runtime.generate import DecoderLM

    reset = _reset_peak_rss()
    start = time.perf_counter()
    lm = DecoderLM(model, threads=threads)
    lm.session.ort_session  # noqa: B018 - built now, timed
    session_s = time.perf_counter() - start
    prompt = list((PROMPT * (prompt_tokens // len(PROMPT) + 1))[:prompt_tokens])
    list(lm.generate(prompt, 2))  # warm-up
    ttft, prefill, decode = [], [], []
    for _ in range(runs):
        first = None
        start = time.perf_counter()
        for i, _token in enumerate(lm.generate(prompt, new_tokens)):
            if i == 0:
                first = time.perf_counter() - start
        ttft.append(first)
        prefill.append(lm.times.prefill_tokens_per_s)
        decode.append(lm.times.decode_tokens_per_s)
    return {"model": model, "threads": threads, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
            "session_s": session_s, "ttft_ms": statistics.median(ttft) * 1e3,
            "prefill_tokens_per_s": statistics.median(prefill), "decode_tokens_per_s": statistics.median(decode),
            "peak_rss_bytes": _peak_rss() if reset else None, "file_bytes": file_bytes(model)}


def measure_decoder_isolated(model: str, timeout: float = 600.0, **kwargs: Any) -> dict[str, Any]:
    """``measure_decoder`` in a fresh process (its peak memory is this model's alone)."""
    from edgeq.runtime.isolated import run_isolated

    return run_isolated("edgeq.runtime.decoder_bench", {"model": model, **kwargs}, timeout,
                        what=f"decoder benchmark of {model}", fix="use fewer --new-tokens")


def _main() -> int:
    from edgeq.runtime.isolated import serve

    return serve(lambda spec: measure_decoder(**spec))


if __name__ == "__main__":
    sys.exit(_main())
