"""Robustness sweep: the DEFAULT ``edgeq quantize --calib`` (auto mode) on architectures edgeq has
never seen -- small random-weight instances of real transformers models.

    .venv/bin/python bench/unseen_sweep.py                # every model
    .venv/bin/python bench/unseen_sweep.py vit whisper    # some of them
    .venv/bin/python bench/unseen_sweep.py --no-static    # skip the --mode static contrast

Each model is built from a small config (2 layers, hidden 64-128, random weights: no download),
exported with ``edgeq.exporter.export`` (dynamo, TorchScript fallback), given 20 calibration
``.npz`` files (audio-like tones and noise, smooth random images, token ids with an attention
mask), then run through the CLI exactly as a user would, one model at a time:

    edgeq quantize model.onnx -o auto.onnx --calib DIR --report auto.json
    edgeq quantize model.onnx -o static.onnx --calib DIR --mode static --report static.json

Recorded per run: exit code, wall time, auto's verdict, min SQNR, latency ratio, precision
counts; the returned model is loaded and run in onnxruntime against the fp32 model. Everything is
written under out/unseen_sweep/ (a summary.json and a markdown table at the end). Needs
transformers (random weights only: fidelity figures mean little; the point is robustness and
the speed verdict).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "out", "unseen_sweep")
EDGEQ = os.path.join(os.path.dirname(sys.executable), "edgeq")
N_CALIB = 20
TIMEOUT_S = 600


# ---------------------------------------------------------------- calibration-like inputs


def audio(rng: np.random.Generator, n: int, sr: int = 16000) -> np.ndarray:
    """Tones, chirps and noise at speech-like levels, shape (n,)."""
    t = np.arange(n) / sr
    x = np.zeros(n)
    for _ in range(rng.integers(1, 4)):
        f0 = rng.uniform(100, 2000)
        f1 = f0 * rng.uniform(0.5, 2.0)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1]))
        env = np.exp(-((t - rng.uniform(0, t[-1])) ** 2) / (2 * rng.uniform(0.02, 0.2) ** 2))
        x += rng.uniform(0.05, 0.5) * env * np.sin(phase)
    x += rng.uniform(0.001, 0.05) * rng.standard_normal(n)
    return x.astype(np.float32)


def log_mel(rng: np.random.Generator, mels: int, frames: int) -> np.ndarray:
    """A log-mel-like (mels, frames) map: smooth formant bands over a noise floor, Whisper-scaled."""
    base = rng.normal(-0.6, 0.1, (mels, frames))
    for _ in range(rng.integers(2, 6)):
        centre = rng.uniform(0, mels)
        band = np.exp(-((np.arange(mels)[:, None] - centre) ** 2) / (2 * rng.uniform(1, 6) ** 2))
        on = (np.arange(frames)[None, :] > rng.uniform(0, frames / 2)) & (np.arange(frames)[None, :] < rng.uniform(frames / 2, frames))
        base += rng.uniform(0.3, 1.2) * band * on
    return np.clip(base, -1.0, 1.5).astype(np.float32)


def image(rng: np.random.Generator, size: int, channels: int = 3) -> np.ndarray:
    """A smooth random field per channel (sums of low-frequency cosines), ImageNet-normalised-ish."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((channels, size, size))
    for c in range(channels):
        for _ in range(6):
            fy, fx = rng.uniform(0, 4, 2)
            img[c] += rng.uniform(0.2, 1.0) * np.cos(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 2 * np.pi))
    img = (img - img.mean()) / (img.std() + 1e-6)
    return (img + 0.1 * rng.standard_normal(img.shape)).astype(np.float32)


def tokens(rng: np.random.Generator, seq: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (CLS ... SEP then padding) and the matching attention mask, shape (1, seq)."""
    n = int(rng.integers(seq // 3, seq + 1))
    ids = np.zeros((1, seq), np.int64)
    ids[0, 0] = 101 % vocab
    ids[0, 1 : n - 1] = rng.integers(1000 % vocab, vocab, n - 2)
    ids[0, n - 1] = 102 % vocab
    mask = np.zeros((1, seq), np.int64)
    mask[0, :n] = 1
    return ids, mask


# ---------------------------------------------------------------- models (random weights)


class _Tensors:
    """Wrap a transformers model so that forward returns plain tensors (the named fields)."""

    def __new__(cls, model: Any, fields: tuple[str, ...]):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = model

            def forward(self, *args):
                out = self.inner(*args, return_dict=True)
                return tuple(out[f] for f in fields)

        return Wrapped().eval()


def _fan_in_init(model: Any) -> None:
    """Conv and Linear weights at std sqrt(2 / fan_in) (He) and BatchNorm scales at 1, as trained
    networks keep their activations' scale (transformers draws BatchNorm weights at std 0.02)."""
    import torch

    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)


def _wav2vec2():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=192,
                         conv_dim=(64, 64, 64, 64, 64), conv_stride=(5, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 2),
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, do_stable_layer_norm=True,
                         feat_extract_norm="layer")
    model = _Tensors(Wav2Vec2Model(cfg), ("last_hidden_state",))
    make = lambda rng: {"input_values": audio(rng, 8000)[None]}  # noqa: E731 (0.5 s at 16 kHz)
    return model, ("input_values",), make


def _hubert():
    from transformers import HubertConfig, HubertModel

    cfg = HubertConfig(hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=192,
                       conv_dim=(64, 64, 64, 64, 64), conv_stride=(5, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 2),
                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    model = _Tensors(HubertModel(cfg), ("last_hidden_state",))
    make = lambda rng: {"input_values": audio(rng, 8000)[None]}  # noqa: E731
    return model, ("input_values",), make


def _whisper_encoder():
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    cfg = WhisperConfig(d_model=96, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=192,
                        num_mel_bins=40, max_source_positions=100, decoder_layers=1, decoder_attention_heads=4)
    model = _Tensors(WhisperEncoder(cfg), ("last_hidden_state",))
    make = lambda rng: {"input_features": log_mel(rng, 40, 200)[None]}  # noqa: E731
    return model, ("input_features",), make


def _vit():
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(image_size=64, patch_size=8, hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=192)
    model = _Tensors(ViTModel(cfg, add_pooling_layer=False), ("last_hidden_state",))
    make = lambda rng: {"pixel_values": image(rng, 64)[None]}  # noqa: E731
    return model, ("pixel_values",), make


def _convnext():
    from transformers import ConvNextConfig, ConvNextForImageClassification

    cfg = ConvNextConfig(hidden_sizes=[32, 64, 96, 128], depths=[1, 1, 2, 1], num_labels=10, image_size=96)
    model = _Tensors(ConvNextForImageClassification(cfg), ("logits",))
    make = lambda rng: {"pixel_values": image(rng, 96)[None]}  # noqa: E731
    return model, ("pixel_values",), make


def _mobilevit():
    from transformers import MobileViTConfig, MobileViTForImageClassification

    cfg = MobileViTConfig(image_size=96, hidden_sizes=[48, 64, 80], neck_hidden_sizes=[16, 24, 32, 48, 64, 80, 160], num_labels=10)
    inner = MobileViTForImageClassification(cfg)
    _fan_in_init(inner)  # transformers' init shrinks activations ~1e8x per stage: all-zero logits
    model = _Tensors(inner, ("logits",))
    make = lambda rng: {"pixel_values": image(rng, 96)[None]}  # noqa: E731
    return model, ("pixel_values",), make


def _segformer():
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    cfg = SegformerConfig(hidden_sizes=[32, 64, 96, 128], depths=[1, 1, 1, 1], decoder_hidden_size=96, num_labels=5)
    model = _Tensors(SegformerForSemanticSegmentation(cfg), ("logits",))
    make = lambda rng: {"pixel_values": image(rng, 96)[None]}  # noqa: E731
    return model, ("pixel_values",), make


def _yolos():
    from transformers import YolosConfig, YolosForObjectDetection

    cfg = YolosConfig(image_size=[64, 96], patch_size=16, hidden_size=96, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=192, num_detection_tokens=10, num_labels=5)
    model = _Tensors(YolosForObjectDetection(cfg), ("logits", "pred_boxes"))
    make = lambda rng: {"pixel_values": image(rng, 96)[None][:, :, :64, :]}  # noqa: E731
    return model, ("pixel_values",), make


def _detr():
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

    backbone = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 96], depths=[1, 1, 1, 1], layer_type="basic",
                            out_features=["stage4"])
    cfg = DetrConfig(use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False, d_model=64,
                     encoder_layers=1, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
                     encoder_ffn_dim=128, decoder_ffn_dim=128, num_queries=10, num_labels=5)
    model = _Tensors(DetrForObjectDetection(cfg), ("logits", "pred_boxes"))
    make = lambda rng: {"pixel_values": image(rng, 96)[None]}  # noqa: E731
    return model, ("pixel_values",), make


def _distilbert():
    from transformers import DistilBertConfig, DistilBertModel

    cfg = DistilBertConfig(vocab_size=2000, dim=96, n_layers=2, n_heads=4, hidden_dim=192, max_position_embeddings=64)
    model = _Tensors(DistilBertModel(cfg), ("last_hidden_state",))

    def make(rng):
        ids, mask = tokens(rng, 32, 2000)
        return {"input_ids": ids, "attention_mask": mask}

    return model, ("input_ids", "attention_mask"), make


def _bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=2000, hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=192,
                     max_position_embeddings=64)
    model = _Tensors(BertModel(cfg), ("last_hidden_state", "pooler_output"))

    def make(rng):
        ids, mask = tokens(rng, 32, 2000)
        return {"input_ids": ids, "attention_mask": mask}

    return model, ("input_ids", "attention_mask"), make


def _bert_dynamic():
    """BERT exported with dynamic batch and sequence axes; calibration sequences of 8-48 tokens."""
    model, names, _ = _bert()

    def make(rng):
        ids, mask = tokens(rng, int(rng.integers(8, 49)), 2000)
        return {"input_ids": ids, "attention_mask": mask}

    return model, names, make


def _wav2vec2_dynamic():
    """Wav2Vec2 exported with dynamic batch and samples axes; clips of 0.3-0.8 s."""
    model, names, _ = _wav2vec2()
    return model, names, lambda rng: {"input_values": audio(rng, int(rng.integers(4800, 12800)))[None]}


# exported with these dynamic axes (else every axis static)
DYNAMIC = {
    "bert_dynamic": {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}},
    "wav2vec2_dynamic": {"input_values": {0: "batch", 1: "samples"}},
}

MODELS: dict[str, Callable[[], tuple[Any, tuple[str, ...], Callable]]] = {
    "wav2vec2": _wav2vec2,
    "hubert": _hubert,
    "whisper_encoder": _whisper_encoder,
    "vit": _vit,
    "convnext": _convnext,
    "mobilevit": _mobilevit,
    "segformer": _segformer,
    "yolos": _yolos,
    "detr": _detr,
    "distilbert": _distilbert,
    "bert": _bert,
    "bert_dynamic": _bert_dynamic,
    "wav2vec2_dynamic": _wav2vec2_dynamic,
}


# ---------------------------------------------------------------- sweep


def build(name: str, folder: str) -> dict[str, Any]:
    """Export ``name`` to folder/model.onnx and write N_CALIB calibration .npz files; a summary dict."""
    import torch

    from edgeq.exporter import export

    torch.manual_seed(0)
    model, input_names, make = MODELS[name]()
    rng = np.random.default_rng(0)
    feeds = [make(rng) for _ in range(N_CALIB)]
    example = tuple(torch.from_numpy(feeds[0][k]) for k in input_names)
    path = os.path.join(folder, "model.onnx")
    t0 = time.perf_counter()
    result = export(model, path, example_inputs=example, input_names=input_names, dynamic=DYNAMIC.get(name))
    calib = os.path.join(folder, "calib")
    os.makedirs(calib, exist_ok=True)
    for i, feed in enumerate(feeds):
        np.savez(os.path.join(calib, f"{i:03d}.npz"), **feed)
    return {"exporter": result.exporter, "fallback": result.fallback_reason, "export_s": round(time.perf_counter() - t0, 1),
            "export_max_abs_error": result.max_abs_error, "size_kb": result.size_bytes // 1024, "model": path, "calib": calib}


def quantize(folder: str, mode: str | None) -> dict[str, Any]:
    """Run the CLI as a user would; exit code, wall time, stderr tail and the report's key figures."""
    tag = mode or "auto"
    out, report = os.path.join(folder, f"{tag}.onnx"), os.path.join(folder, f"{tag}.json")
    cmd = [EDGEQ, "quantize", os.path.join(folder, "model.onnx"), "-o", out, "--calib", os.path.join(folder, "calib"), "--report", report]
    if mode:
        cmd += ["--mode", mode]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        rc, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, err = "timeout", str(exc.stderr or "")
    row: dict[str, Any] = {"rc": rc, "wall_s": round(time.perf_counter() - t0, 1), "stderr_tail": err.strip().splitlines()[-3:] if err else []}
    if rc == 0 and os.path.exists(report):
        with open(report) as f:
            row.update(_figures(json.load(f)))
        row["runs"] = _check_runs(os.path.join(folder, "model.onnx"), out, os.path.join(folder, "calib"))
    return row


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    """Auto's verdict, min SQNR, latency ratio and precision counts (or static's summary)."""
    auto = report.get("auto") or {}
    row: dict[str, Any] = {"quantized_nodes": report.get("summary", {}).get("quantized"),
                           "left_float": report.get("summary", {}).get("left_float")}
    if auto:
        counts: dict[str, int] = {}
        for layer in auto.get("layers", []):
            counts[layer.get("precision", "?")] = counts.get(layer.get("precision", "?"), 0) + 1
        chosen = next((c for c in auto.get("configurations", []) if c.get("name") == auto.get("chosen")), {})
        fp32 = auto.get("fp32_latency_ms")
        row.update(verdict=auto.get("verdict"), chosen=auto.get("chosen"), min_sqnr_db=(auto.get("fidelity") or {}).get("min_sqnr_db"),
                   fp32_ms=fp32, chosen_ms=chosen.get("latency_ms"),
                   speedup=round(fp32 / chosen["latency_ms"], 2) if fp32 and chosen.get("latency_ms") else None,
                   precisions=counts, configurations=len(auto.get("configurations", [])))
    return row


def _check_runs(fp32: str, quantized: str, calib: str) -> dict[str, Any]:
    """Load the returned model and run it on every calibration feed: the min over outputs of the
    SQNR vs fp32 over all feeds stacked (auto's own measure, here on its calibration data)."""
    import onnxruntime as ort

    from edgeq.metrics import sqnr_db

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    ref = ort.InferenceSession(fp32, so, providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(quantized, so, providers=["CPUExecutionProvider"])
    refs, gots = [], []
    for f in sorted(os.listdir(calib)):
        with np.load(os.path.join(calib, f), allow_pickle=False) as z:
            feed = {k: z[k] for k in z.files}
        refs.append(ref.run(None, feed))
        gots.append(got.run(None, feed))
    flat = lambda runs, i: np.concatenate([r[i].reshape(-1) for r in runs])  # noqa: E731 (shapes vary with dynamic axes)
    worst = min(float(sqnr_db(flat(refs, i), flat(gots, i))) for i in range(len(refs[0])))
    return {"loads": True, "min_sqnr_db_all_feeds": round(worst, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=list(MODELS))
    parser.add_argument("--no-static", action="store_true", help="skip the --mode static contrast")
    args = parser.parse_args(argv)
    os.makedirs(OUT, exist_ok=True)
    summary_path = os.path.join(OUT, "summary.json")
    summary = json.load(open(summary_path)) if os.path.exists(summary_path) else {}
    for name in args.models:
        folder = os.path.join(OUT, name)
        os.makedirs(folder, exist_ok=True)
        row: dict[str, Any] = {}
        try:
            row["build"] = build(name, folder)
        except Exception as exc:  # an export that fails in torch: noted, skipped
            row["build"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
            print(f"{name}: export failed: {row['build']['error']}", flush=True)
            summary[name] = row
            continue
        row["auto"] = quantize(folder, None)
        if not args.no_static:
            row["static"] = quantize(folder, "static")
        summary[name] = row
        print(f"{name}: {json.dumps({k: v for k, v in row.items() if k != 'build'}, default=str)}", flush=True)
        with open(summary_path, "w") as f:
            json.dump(summary, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
