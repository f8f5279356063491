"""``edgeq generate`` and ``edgeq perplexity``: a decoder language model with a KV cache
(``edgeq.runtime.generate``), tokens streamed as they come."""

from __future__ import annotations

import click

__all__ = ["generate", "perplexity"]


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--prompt", required=True, help="The text to continue.")
@click.option("--max-new-tokens", type=click.IntRange(1), default=64, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.0, show_default=True, help="0: greedy.")
@click.option("--top-k", type=click.IntRange(0), default=0, help="Sample from the k most likely tokens (0: all).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
def generate(model: str, prompt: str, max_new_tokens: int, temperature: float, top_k: int, seed: int,
             threads: int) -> None:
    """Continue PROMPT with MODEL (KV cache kept between steps), streaming the tokens."""
    import sys

    from edgeq.runtime.generate import DecoderLM, TextStream

    lm = DecoderLM(model, threads=threads)
    tokens = lm.encode(prompt)
    sys.stdout.write(prompt)
    stream = TextStream(lm)
    for token in lm.generate(tokens, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed):
        text = stream.push(token)
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
    sys.stdout.write("\n")
    t = lm.times
    click.echo(f"prefill {t.prompt_tokens} tokens: {t.prefill_s * 1e3:.1f} ms ({t.prefill_tokens_per_s:.0f} tokens/s); "
               f"decode {len(t.steps) + 1} tokens: {t.decode_tokens_per_s:.1f} tokens/s at {threads} thread(s)", err=True)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--text", "text_file", required=True, type=click.Path(dir_okay=False), help="A UTF-8 text file.")
@click.option("--window", type=click.IntRange(2), default=None, help="Tokens scored per window (default: the model's positions, at most 512).")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
def perplexity(model: str, text_file: str, window: int | None, threads: int) -> None:
    """Perplexity of MODEL on the text of a file (exp of the mean next-token loss)."""
    from edgeq.errors import InputError
    from edgeq.files import regular_file
    from edgeq.runtime.generate import DecoderLM

    try:
        with open(regular_file(text_file, "text file"), encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise InputError(f"{text_file} is not UTF-8 text ({e.reason} at byte {e.start}): give a UTF-8 text file") from None
    if not text.strip():
        raise InputError(f"{text_file} holds no text: give a UTF-8 text file")
    lm = DecoderLM(model, threads=threads)
    tokens = lm.encode(text)
    click.echo(f"perplexity {lm.perplexity(tokens, window):.4f} over {len(tokens)} tokens")
