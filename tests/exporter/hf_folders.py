"""Small random-weight Hugging Face decoder folders (config.json, model.safetensors, tokenizer.json,
generation_config.json) of each architecture export-llm supports, made in code."""

from __future__ import annotations

import os

VOCAB = 320
TEXT = ["def add(a, b):\n    return a + b\n", "The quick brown fox jumps over the lazy dog.",
        "for i in range(10):\n    print(i * i)\n", "import numpy as np\nx = np.zeros(3)\n"] * 8


def config(kind: str):
    import transformers

    common = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2)
    if kind == "gpt2":
        return transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, **common)
    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=128, **common)
    if kind == "llama":
        return transformers.LlamaConfig(num_key_value_heads=2, **small)
    if kind == "qwen2":
        return transformers.Qwen2Config(num_key_value_heads=2, **small)
    if kind == "phi3":
        return transformers.Phi3Config(num_key_value_heads=4, pad_token_id=0, **small)
    raise ValueError(kind)


def tokenizer_json(vocab: int = VOCAB) -> str:
    """A byte-level BPE tokenizer trained on TEXT (every byte encodes, so any text does)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXT, trainer)
    return tok.to_str()


def make_folder(kind: str, folder: str, *, seed: int = 0, tokenizer: bool = True) -> str:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config(kind))
    model.save_pretrained(folder, safe_serialization=True)
    GenerationConfig(bos_token_id=1, eos_token_id=2).save_pretrained(folder)
    if tokenizer:
        with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(tokenizer_json())
    return folder
