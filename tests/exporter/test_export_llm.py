"""edgeq export-llm: Hugging Face decoder folders of each supported architecture (random weights,
made in code) -> one ONNX graph with its KV cache, which generates what transformers generates."""

from __future__ import annotations

import os
import sys

import onnx
import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

sys.path.insert(0, os.path.dirname(__file__))
import hf_folders  # noqa: E402

from edgeq.errors import UsageError  # noqa: E402
from edgeq.exporter.llm import export_llm  # noqa: E402
from edgeq.runtime.generate import DecoderLM, TextStream  # noqa: E402

KINDS = ("gpt2", "llama", "qwen2", "phi3")
_EXPORTS: dict[str, tuple] = {}  # one export per architecture per test process


def _exported(kind, tmp_path_factory):
    if kind not in _EXPORTS:
        base = tmp_path_factory.mktemp(kind)
        folder = hf_folders.make_folder(kind, str(base / "hf"))
        _EXPORTS[kind] = (kind, folder, export_llm(folder, str(base / f"{kind}.onnx")))
    return _EXPORTS[kind]


@pytest.fixture(scope="module", params=KINDS)
def exported(request, tmp_path_factory):
    return _exported(request.param, tmp_path_factory)


@pytest.fixture()
def llama(tmp_path_factory):
    return _exported("llama", tmp_path_factory)


@pytest.fixture()
def gpt2(tmp_path_factory):
    return _exported("gpt2", tmp_path_factory)


@pytest.fixture()
def qwen2(tmp_path_factory):
    return _exported("qwen2", tmp_path_factory)


def _torch_model(folder):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()


def test_contract_and_metadata(exported):
    kind, folder, result = exported
    model = onnx.load(result.export.path)
    assert [i.name for i in model.graph.input] == ["input_ids", "past_key", "past_value"]
    assert [o.name for o in model.graph.output] == ["logits", "present_key", "present_value"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["edgeq.tokenizer"] == "hf" and meta["edgeq.tokenizer_json"].startswith("{")
    assert meta["edgeq.eos_token_id"] == "2" and meta["edgeq.max_length"] == "128"
    assert meta["edgeq.architecture"] == kind
    expected_heads = {"gpt2": 4, "llama": 2, "qwen2": 2, "phi3": 4}[kind]  # llama, qwen2: grouped-query KV
    assert (result.layers, result.kv_heads, result.head_dim, result.vocab) == (2, expected_heads, 16, hf_folders.VOCAB)
    assert result.decode_max_abs_error is not None and result.decode_max_abs_error < 1e-4
    assert result.export.max_abs_error < 1e-4


def test_greedy_tokens_match_transformers(exported):
    """The exported graph, driven by edgeq's KV-cache loop, picks the tokens transformers' own
    generate picks (greedy, 12 steps, batch 1), from the same prompt ids."""
    import torch

    kind, folder, result = exported
    lm = DecoderLM(result.export.path)
    prompt = lm.encode("def add(a, b):")
    assert prompt and all(0 <= t < hf_folders.VOCAB for t in prompt)
    ours = list(lm.generate(prompt, 12, stop_at_eos=False))
    model = _torch_model(folder)
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                             pad_token_id=0)
    assert ours == ref[0, len(prompt):].tolist()
    assert len(lm.times.steps) == 11


def test_perplexity_matches_torch(exported):
    import torch

    kind, folder, result = exported
    lm = DecoderLM(result.export.path)
    tokens = lm.encode("for i in range(10):\n    print(i * i)\n" * 3)
    ours = lm.perplexity(tokens)
    model = _torch_model(folder)
    with torch.no_grad():
        loss = model(torch.tensor([tokens]), labels=torch.tensor([tokens])).loss
    assert ours == pytest.approx(float(torch.exp(loss)), rel=1e-4)


def test_quantize_int4_keeps_the_tokenizer(llama, tmp_path):
    """--weights int4 on an exported decoder: MatMulNBits weights, the metadata kept, and the
    quantized model generates text with the tokenizer it carries."""
    import edgeq

    kind, folder, result = llama
    out = str(tmp_path / "int4.onnx")
    edgeq.quantize(result.export.path, edgeq.QuantConfig(mode="weight-only", weights="int4"), None,
                   progress=False).save(out)
    model = onnx.load(out)
    assert sum(n.op_type == "MatMulNBits" for n in model.graph.node) >= 8  # q, k, v, o, up, gate, down per layer
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["edgeq.tokenizer"] == "hf" and meta["edgeq.eos_token_id"] == "2"
    lm, ref = DecoderLM(out), DecoderLM(result.export.path)
    text = "import numpy as np\n"
    assert lm.perplexity(lm.encode(text)) == pytest.approx(ref.perplexity(ref.encode(text)), rel=0.05)


def test_text_stream_gives_each_character_once(gpt2):
    kind, folder, result = gpt2
    lm = DecoderLM(result.export.path)
    tokens = lm.encode("naïve café → done")
    stream = TextStream(lm)
    assert "".join(stream.push(t) for t in tokens) == "naïve café → done"


def test_generation_stops_at_eos(qwen2):
    kind, folder, result = qwen2
    lm = DecoderLM(result.export.path)
    prompt = lm.encode("x = 1")
    free = list(lm.generate(prompt, 6, stop_at_eos=False))
    lm.eos_ids = frozenset({free[2]})  # as if the third token were end-of-text
    assert list(lm.generate(prompt, 6)) == free[: free.index(free[2]) + 1]


# -- bad folders: one line, exit 2, nothing written -------------------------------------------------
BAD_FOLDERS = {  # folder: (its files, the error's pattern)
    "missing": (None, "is not a folder"),
    "bert": ({"config.json": '{"model_type": "bert"}'}, "architecture 'bert' is not supported.*Llama"),
    "pickled": ({"config.json": '{"model_type": "llama"}', "pytorch_model.bin": "not loaded"},
                "pickled weights are not loaded.*safetensors"),
    "broken": ({"config.json": '{"model_type": '}, "not readable JSON"),
}


@pytest.mark.parametrize("name", BAD_FOLDERS)
def test_bad_folders(tmp_path, name):
    files, pattern = BAD_FOLDERS[name]
    if files is not None:
        (tmp_path / name).mkdir()
        for file, text in files.items():
            (tmp_path / name / file).write_text(text)
    with pytest.raises(UsageError, match=pattern):
        export_llm(str(tmp_path / name), str(tmp_path / "a.onnx"))
    assert not (tmp_path / "a.onnx").exists()


def _cli(argv, capsys) -> tuple[int, str]:
    from edgeq.cli.main import main

    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return info.value.code, captured.out + captured.err


def test_cli_export_generate_and_errors(tmp_path, capsys):
    folder = hf_folders.make_folder("gpt2", str(tmp_path / "hf"), tokenizer=False)
    out = str(tmp_path / "m.onnx")
    code, text = _cli(["export-llm", folder, "-o", out], capsys)
    assert code == 0, text
    assert "gpt2: 2 layers, 4 KV heads of 16" in text and "none (token ids only)" in text and "decode check" in text
    # no tokenizer carried: text in is refused in one line naming the reason, exit 2, no traceback
    code, text = _cli(["generate", out, "--prompt", "hi"], capsys)
    assert code == 2 and "tokenizer '(none)'" in text and "Traceback" not in text
    code, text = _cli(["export-llm", tmp_path / "nope", "-o", tmp_path / "x.onnx"], capsys)
    assert code == 2 and "is not a folder" in text and not (tmp_path / "x.onnx").exists()
