"""``export_llm``: a local Hugging Face decoder folder -> one ONNX graph with its KV cache.

    from edgeq.exporter.llm import export_llm
    result = export_llm("models/qwen2-0.5b", "out/qwen2.onnx")   # config.json, *.safetensors, tokenizer.json

1. The folder: ``config.json`` of a supported architecture (ARCHITECTURES: GPT-2, Llama, Qwen2,
   Phi-3), weights as safetensors (never a pickle), ``tokenizer.json`` and
   ``generation_config.json`` where present. The model is loaded in float32 with eager attention
   (plain MatMul/Softmax, which every onnxruntime provider runs and edgeq quantizes).
2. The graph has edgeq's decoder contract (``edgeq.runtime.generate``): inputs ``input_ids``
   (batch, sequence), ``past_key`` and ``past_value`` (layers, batch, kv_heads, past, head_dim);
   outputs ``logits``, ``present_key``, ``present_value``. One graph serves prefill (past 0) and
   decode. Positions continue from ``past``; every token attends to all before it (no padding
   mask: the rows of a batch have the same length).
3. Exported by ``edgeq.exporter.export`` (dynamo first, TorchScript fallback, external data past
   2 GB, checked against torch on a prompt after a past of 3), then checked again as it is used:
   a prefill from an empty cache and DECODE_CHECK greedy decode steps, ORT's logits against
   torch's at each step (ExportError above tolerance).
4. The metadata carries what ``generate`` and ``perplexity`` need, and ``edgeq quantize`` keeps
   it: ``edgeq.tokenizer`` = ``hf`` with the tokenizer.json text in ``edgeq.tokenizer_json``,
   ``edgeq.eos_token_id`` (comma-separated), ``edgeq.bos_token_id``, ``edgeq.max_length`` (the
   config's positions) and ``edgeq.architecture``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.errors import ExportError, UsageError
from edgeq.exporter.core import ExportResult

__all__ = ["ARCHITECTURES", "LLMExportResult", "export_llm"]

logger = logging.getLogger(__name__)

ARCHITECTURES = {"gpt2": "GPT-2", "llama": "Llama", "qwen2": "Qwen2", "phi3": "Phi-3"}
INPUTS = ("input_ids", "past_key", "past_value")
OUTPUTS = ("logits", "present_key", "present_value")
AXES = {"input_ids": {0: "batch", 1: "sequence"}, "past_key": {1: "batch", 3: "past"},
        "past_value": {1: "batch", 3: "past"}, "logits": {0: "batch", 1: "sequence"},
        "present_key": {1: "batch", 3: "total"}, "present_value": {1: "batch", 3: "total"}}
DECODE_CHECK = 3  # greedy decode steps checked after the prefill
PROMPT = 8  # tokens of the checked prefill


@dataclass(frozen=True)
class LLMExportResult:
    export: ExportResult
    architecture: str  # config.model_type
    layers: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_length: int | None
    tokenizer: bool  # tokenizer.json carried in the metadata
    decode_max_abs_error: float | None  # prefill + decode steps, ORT vs torch logits (None: not checked)


def _read_folder(folder: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json, generation_config.json or {}), after checking what the folder holds."""
    if not os.path.isdir(folder):
        raise UsageError(f"{folder} is not a folder: give a local Hugging Face model folder (config.json, "
                         "*.safetensors, tokenizer.json)")
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise UsageError(f"{folder} has no config.json: give a Hugging Face model folder (save_pretrained writes one)")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"{config_path} is not readable JSON ({e}): fix or re-download it") from None
    kind = config.get("model_type")
    if kind not in ARCHITECTURES:
        raise UsageError(f"{folder}: architecture {kind!r} is not supported by export-llm; it exports "
                         f"{', '.join(f'{v} ({k})' for k, v in ARCHITECTURES.items())}")
    names = os.listdir(folder)
    if not any(n.endswith(".safetensors") for n in names):
        pickled = [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
        hint = (f" (it has {', '.join(sorted(pickled))}: pickled weights are not loaded; convert them to safetensors "
                "with save_pretrained(..., safe_serialization=True))") if pickled else ""
        raise UsageError(f"{folder} has no *.safetensors weights{hint}")
    generation: dict[str, Any] = {}
    gen_path = os.path.join(folder, "generation_config.json")
    if os.path.isfile(gen_path):
        try:
            with open(gen_path, encoding="utf-8") as f:
                generation = json.load(f)
        except (OSError, ValueError):
            logger.warning("%s is not readable JSON: the config's token ids are used", gen_path)
    return config, generation


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def metadata_for(folder: str, config: dict[str, Any], generation: dict[str, Any]) -> dict[str, str]:
    """The metadata_props that make the exported model self-contained (see the module doc, 4)."""
    meta = {"edgeq.architecture": str(config["model_type"])}
    eos = _ids(generation.get("eos_token_id", config.get("eos_token_id")))
    bos = _ids(generation.get("bos_token_id", config.get("bos_token_id")))
    if eos:
        meta["edgeq.eos_token_id"] = ",".join(map(str, eos))
    if bos:
        meta["edgeq.bos_token_id"] = str(bos[0])
    positions = config.get("max_position_embeddings") or config.get("n_positions")
    if positions:
        meta["edgeq.max_length"] = str(int(positions))
    tokenizer = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(tokenizer):
        with open(tokenizer, encoding="utf-8") as f:
            meta["edgeq.tokenizer_json"] = f.read()
        meta["edgeq.tokenizer"] = "hf"
    else:
        logger.warning("%s has no tokenizer.json: generate and perplexity will need token ids", folder)
    return meta


def _wrap(model: Any, layers: int) -> Any:
    """A module with the decoder contract around a transformers causal LM."""
    import torch
    from transformers import DynamicCache

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, past_key, past_value):
            batch, seq = input_ids.shape
            past = past_key.shape[3]
            cache = DynamicCache(config=self.model.config)
            for i in range(layers):
                cache.update(past_key[i], past_value[i], i)
            positions = (torch.arange(seq, device=input_ids.device) + past).unsqueeze(0).expand(batch, seq)
            mask = torch.ones(batch, past + seq, dtype=torch.long, device=input_ids.device)
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                             past_key_values=cache, use_cache=True)
            kv = out.past_key_values.layers
            return (out.logits, torch.stack([kv[i].keys for i in range(layers)]),
                    torch.stack([kv[i].values for i in range(layers)]))

    return Decoder().eval()


def _decode_check(path: str, decoder: Any, shape: tuple[int, int, int, int], vocab: int) -> float:
    """Max |ORT - torch| of the logits over a prefill from an empty cache and DECODE_CHECK greedy steps."""
    import torch

    from edgeq.runtime.session import Session

    layers, heads, head_dim, _ = shape
    session = Session(path, providers=("cpu",), threads=None)
    ids = np.random.default_rng(0).integers(0, vocab, (1, PROMPT), dtype=np.int64)
    empty = np.zeros((layers, 1, heads, 0, head_dim), np.float32)
    ort_past, torch_past = (empty, empty), (torch.from_numpy(empty), torch.from_numpy(empty))
    worst, scale = 0.0, 0.0
    with torch.no_grad():
        for _ in range(DECODE_CHECK + 1):
            out = session.run({"input_ids": ids, "past_key": ort_past[0], "past_value": ort_past[1]}, checked=True)
            ref_logits, rk, rv = decoder(torch.from_numpy(ids), *torch_past)
            ref = ref_logits.numpy()
            worst = max(worst, float(np.abs(out["logits"] - ref).max()))
            scale = max(scale, float(np.abs(ref).max()))
            ort_past, torch_past = (out["present_key"], out["present_value"]), (rk, rv)
            ids = np.argmax(ref[:, -1:], axis=-1).astype(np.int64)  # the next token, greedy
    if worst > 1e-3 * max(scale, 1.0):
        raise ExportError(f"{path}: logits differ from torch by up to {worst:.3g} (logits up to {scale:.3g}) over a "
                          f"prefill and {DECODE_CHECK} decode steps; try --exporter torchscript")
    return worst


def export_llm(folder: str | os.PathLike, out: str | os.PathLike, *, opset: int | None = None, check: bool = True,
               exporter: str = "auto") -> LLMExportResult:
    """Export the Hugging Face decoder in ``folder`` to ``out``; see the module docstring."""
    import importlib.util

    folder, out = os.fspath(folder), os.fspath(out)
    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("torch") is None:
        raise UsageError("export-llm needs torch and transformers: pip install 'edgeq[llm]'")
    config, generation = _read_folder(folder)
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from edgeq.exporter.core import export

    transformers.utils.logging.disable_progress_bar()  # the CLI shows its own status

    try:
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                     dtype=torch.float32, attn_implementation="eager")
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds; one line names it
        raise UsageError(f"transformers cannot load {folder}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    model.eval()
    vocab = int(model.get_input_embeddings().weight.shape[0])
    with torch.no_grad():  # the cache's shape, as this transformers version lays it out
        probe = model(input_ids=torch.zeros(1, 1, dtype=torch.long), use_cache=True).past_key_values.layers
    layers, (_, heads, _, head_dim) = len(probe), probe[0].keys.shape
    decoder = _wrap(model, layers)
    rng = torch.Generator().manual_seed(0)
    example = (torch.randint(0, vocab, (1, 4), generator=rng), torch.randn(layers, 1, heads, 3, head_dim, generator=rng),
               torch.randn(layers, 1, heads, 3, head_dim, generator=rng))
    meta = metadata_for(folder, config, generation)
    result = export(decoder, out, example_inputs=example, input_names=INPUTS, output_names=OUTPUTS, dynamic=AXES,
                    opset=opset, check=check, exporter=exporter, metadata=meta)
    error = None
    if check:
        try:
            error = _decode_check(out, decoder, (layers, heads, head_dim, vocab), vocab)
        except ExportError:
            for path in (out, out + ".data"):  # written moments ago by export (and its external data): it failed
                if os.path.exists(path):
                    os.remove(path)
            raise
    positions = meta.get("edgeq.max_length")
    return LLMExportResult(result, config["model_type"], layers, int(heads), int(head_dim), vocab,
                           int(positions) if positions else None, "edgeq.tokenizer_json" in meta, error)
