"""QAT by distillation: a zoo model with the data it knows (``edgeq qat NAME -o OUT.onnx``), or
an ONNX file with unlabeled inputs (``edgeq qat IN.onnx -o OUT.onnx --calib DIR [--eval DIR]``).

    zoo model --export--> fp32 ONNX (the teacher) --prepare--> QATModel --fit (distillation)--> export

1. Training inputs: the model's calibration source (its training split, or its generator's
   seed 0), ``samples`` of them; edgeq's calibration starts from the first 32. Judged on its
   evaluation split (held out, another seed).
2. No labels are needed: the loss is distillation from the fp32 model's outputs (KL divergence of
   the class distributions for classifiers, mean squared error scaled by the teacher's variance
   otherwise), so the same recipe serves every zoo model and any ONNX model with inputs.
3. Before (PTQ: the untrained module exported, edgeq's static model with the same scheme) and
   after, both on onnxruntime: min output SQNR vs fp32, top-1 accuracy where the zoo has labels,
   argmax agreement for classifiers.
4. A tenth of the training inputs, spread over them by loudness (``metrics.spread``: a
   stream's last tenth is one stretch of it), is held out of training: the SQNR against the
   teacher there picks the best epoch (or the untrained model), never the evaluation split.
5. The zoo's torch module is built too, so that its BatchNorms come back beside their
   convolutions (``batchnorm.py``). Distillation aims at the fp32 model's outputs, which use the
   running statistics, so they are frozen from the start by default (``freeze_bn_after=0``):
   batch statistics for the first half cost 2.8 dB on digits_mobilenet at 4 bits (3 epochs:
   18.8 against 21.6 dB), where a task loss on labels gained from them (docs/qat.md).
6. Where this CPU's onnxruntime saturates products of 8-bit weights and the model has them
   (static mode measured and kept 8 bits: ``qat/export.py`` (6)), the epoch is picked by the
   model as exported, on onnxruntime's kernels over the held-out tenth, not by torch, which
   cannot see the saturation: MiniLM's 3 epochs there rose from 27.6 to 28.0 dB in torch while
   its file fell from 26.2 to 26.1 dB on the evaluation split (28.7 dB in the file's exact
   arithmetic, ``passes/integer_as_float.py``).
7. A trained model is kept only where it beats the untrained one on the held-out inputs beyond
   their spread: a one-sided paired t-test at 5% on the per-input noise reductions (dB, the
   exported model on onnxruntime); else the untrained model (edgeq's PTQ) is returned, and the
   summary's ``gain_check`` says why. The best-epoch rule alone let a small set through:
   MiniLM's 100 bundled sentences leave 10 to hold out, on which 3 epochs gained 0.5 dB in
   torch, while the evaluation split lost 0.45 dB (29.2 -> 28.75 in the file's exact
   arithmetic). A first threshold of 2 standard errors also turned away kws and textdet (t =
   1.95 and 1.84 on about 100 held-out inputs), whose evaluation splits gained 0.9 and 0.4 dB.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeq.qat.config import QATConfig

__all__ = ["qat_zoo", "qat_file", "distill", "batches", "batch_axes", "distillation_loss", "score"]

CALIB = 32
GAIN_Z = 1.6449  # (7) the one-sided 5% point of the normal distribution


def batches(feeds: Sequence[dict[str, np.ndarray]], targets: Sequence[Sequence[np.ndarray]], size: int,
            seed: int, axes: dict[str, int] | None = None, out_axes: Sequence[int] | None = None) -> list[tuple[dict, tuple]]:
    """Feeds of the same shapes stacked into batches of up to ``size`` (shuffled, fixed seed),
    along each input's batch axis (``axes``, default 0; a state input [layers, batch, hidden] is
    stacked along 1) and each output's (``out_axes``). A scalar input (a sample rate) is not
    stacked: feeds are grouped by its value, and a batch carries it once."""
    import torch

    axes = axes or {}
    groups: dict[tuple, list[int]] = {}
    for i, feed in enumerate(feeds):
        key = tuple((k, v.shape, v.item() if v.ndim == 0 else None) for k, v in sorted(feed.items()))
        groups.setdefault(key, []).append(i)
    rng = np.random.default_rng(seed)
    out = []

    def stack(arrays: list[np.ndarray], axis: int) -> torch.Tensor:
        return torch.from_numpy(arrays[0].copy() if arrays[0].ndim == 0 else np.concatenate(arrays, axis=axis))

    for members in groups.values():
        members = list(rng.permutation(members))
        for j in range(0, len(members), size):
            idx = members[j:j + size]
            inputs = {k: stack([feeds[i][k] for i in idx], axes.get(k, 0)) for k in feeds[idx[0]]}
            target = tuple(stack([targets[i][o] for i in idx], out_axes[o] if out_axes else 0)
                           for o in range(len(targets[idx[0]])))
            out.append((inputs, target))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def batch_axes(model: Any) -> tuple[dict[str, int], list[int]]:
    """Each graph input's and output's batch axis (``model``: a path or a loaded model): its first
    dimension that is not a number (a state [2, batch, 128] batches along 1), else 0."""
    from edgeq.io import as_model

    model, _ = as_model(model, copy=False)

    def axis(value: Any) -> int:
        shape = value.shape
        dims = list(shape) if shape is not None else []
        return next((i for i, d in enumerate(dims) if not isinstance(d, int)), 0)

    return ({v.name: axis(v) for v in model.graph.inputs}, [axis(v) for v in model.graph.outputs])


def _spread_split(feeds: Sequence[dict[str, np.ndarray]], share: int, least: int) -> tuple[list[int], list[int]]:
    """(4) Indices kept and held out: ``len // share`` (at least ``least``) spread over the feeds by loudness."""
    from edgeq.metrics import feature, spread

    held = set(spread([feature(f) for f in feeds], max(len(feeds) // share, least)))
    return [i for i in range(len(feeds)) if i not in held], sorted(held)


def distillation_loss(classification: bool, scales: Sequence[float]):
    """(2) The loss of a student's outputs against the teacher's."""
    import torch

    def loss(out: Any, target: tuple) -> torch.Tensor:
        outs = out if isinstance(out, tuple) else (out,)
        total = 0.0
        for o, t, s in zip(outs, target, scales):
            o, t = o.float(), t.float()
            if classification and o.dim() == 2:
                total = total + torch.nn.functional.kl_div(torch.log_softmax(o, -1), torch.log_softmax(t, -1),
                                                           log_target=True, reduction="batchmean")
            else:
                total = total + torch.mean((o - t) ** 2) / s
        return total
    return loss


def _run(path: str | bytes, feeds: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return [session.run(None, f) for f in feeds]


def score(outputs: list[list[np.ndarray]], reference: list[list[np.ndarray]], labels: np.ndarray | None,
          classification: bool) -> dict[str, Any]:
    """(3) min output SQNR over the samples at once; top-1 and argmax agreement for classifiers."""
    from edgeq.metrics import sqnr_db

    sqnr = [sqnr_db(np.concatenate([r[o].reshape(-1) for r in reference]),
                    np.concatenate([x[o].reshape(-1) for x in outputs])) for o in range(len(reference[0]))]
    result: dict[str, Any] = {"sqnr_db": round(min(sqnr), 2)}
    if classification:
        pred = np.array([x[0].reshape(-1).argmax() for x in outputs])
        ref = np.array([r[0].reshape(-1).argmax() for r in reference])
        result["argmax_agreement"] = round(float(np.mean(pred == ref)), 4)
        if labels is not None:
            result["top1"] = round(float(np.mean(pred == labels[:len(pred)])), 4)
    return result


def _sqnr(model: Any, validation: list[tuple[dict, tuple]]) -> float:
    """Min output SQNR (dB) of ``model`` against the teacher's outputs over ``validation``."""
    signal: dict[int, float] = {}
    noise: dict[int, float] = {}
    device = next(model.parameters()).device
    for inputs, target in validation:
        out = model(**{k: v.to(device) for k, v in inputs.items()})
        out = out if isinstance(out, tuple) else (out,)
        for i, (o, t) in enumerate(zip(out, target)):
            o, t = o.double().cpu(), t.double()
            signal[i] = signal.get(i, 0.0) + float((t ** 2).sum())
            noise[i] = noise.get(i, 0.0) + float(((o - t) ** 2).sum())
    from edgeq.metrics import power_ratio_db

    return min(power_ratio_db(signal[i], noise[i]) for i in signal)


def _exported_outputs(model: Any, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """``model`` exported as it would be, run on onnxruntime's CPU kernels."""
    import copy

    from edgeq.io import model_bytes
    from edgeq.qat.export import to_onnx

    on_cpu = model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).to("cpu")
    return _run(model_bytes(to_onnx(on_cpu)), feeds)


def _deployed_sqnr(model: Any, feeds: list[dict[str, np.ndarray]], teacher: list[list[np.ndarray]]) -> float:
    """(6) Min output SQNR (dB) of ``model`` exported as it would be, on onnxruntime's CPU kernels."""
    return score(_exported_outputs(model, feeds), teacher, None, False)["sqnr_db"]


def noise_per_input(outputs: list[list[np.ndarray]], teacher: list[list[np.ndarray]]) -> np.ndarray:
    """(7) Per input: the squared error of its outputs, each output's relative to that output's
    mean energy over the inputs (so that outputs of any scale weigh alike)."""
    count = len(teacher[0])
    energy = [max(float(np.mean([np.sum(np.square(t[o], dtype=np.float64)) for t in teacher])), 1e-30)
              for o in range(count)]
    return np.array([sum(float(np.sum(np.square(t[o].astype(np.float64) - np.asarray(x[o], np.float64)))) / energy[o]
                         for o in range(count)) for t, x in zip(teacher, outputs)])


def t_critical(df: int, z: float | None = None) -> float:
    """Student's t at the normal point ``z`` for ``df`` degrees of freedom (Cornish-Fisher, three
    terms: within 0.01 of the tables from df = 3); ``z``: ``GAIN_Z`` unless given."""
    z = GAIN_Z if z is None else z
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def clear_gain(before: np.ndarray, after: np.ndarray) -> tuple[bool, float, float]:
    """(7) Whether ``after``'s noise per input is below ``before``'s beyond their spread: a one-sided
    paired t-test at 5% on the per-input reductions in dB. Returns it, their mean and its standard
    error (dB)."""
    floor = 1e-12 * max(float(np.mean(before)), 1e-30)  # an input both answer exactly: no change
    gains = 10.0 * np.log10((before + floor) / (after + floor))
    mean = float(np.mean(gains))
    if len(gains) < 2:
        return False, mean, float("inf")
    error = float(np.std(gains, ddof=1) / np.sqrt(len(gains)))
    return mean > 0.0 and mean > t_critical(len(gains) - 1) * error, mean, error


def distill(fp32: str, train: Sequence[dict[str, np.ndarray]], unseen: Sequence[dict[str, np.ndarray]], out: str, *,
            classification: bool = False, labels: np.ndarray | None = None, epochs: int = 3,
            config: QATConfig | None = None, amp: str | None = None, lr: float | None = None, step_lr: float = 0.01,
            batch: int = 32, seed: int = 0, progress: bool = True, ptq_out: str | None = None,
            freeze_bn_after: float = 0.0, batchnorms_from: Any = None, device: str = "cpu") -> dict[str, Any]:
    """QAT of the ONNX model ``fp32`` distilled from its own outputs on ``train`` (the first 32
    calibrate, a tenth spread over them picks the epoch), judged on ``unseen``; writes ``out`` and returns
    the summary (see the module doc). ``device``: where training runs ("cuda"); the model comes
    back to the CPU for its export."""
    import copy

    import torch

    from edgeq.errors import DataError
    from edgeq.io import check_output_path
    from edgeq.qat.export import export, saturating
    from edgeq.qat.fit import fit
    from edgeq.qat.prepare import prepare

    config = config or QATConfig()
    check_output_path(out, [fp32])
    if len(train) < 16 or not unseen:
        raise DataError(f"QAT needs at least 16 training inputs and one evaluation input, got {len(train)} and "
                        f"{len(unseen)}: give more data (--calib, --eval)")
    torch.manual_seed(seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeq-qat-") as workdir:
        teacher = _run(fp32, train)
        reference = _run(fp32, unseen)
        scales = [max(float(np.var(np.concatenate([t[o].reshape(-1) for t in teacher]))), 1e-12)
                  for o in range(len(teacher[0]))]
        qat = prepare(fp32, calib=list(train[:CALIB]), config=config, batchnorms_from=batchnorms_from)
        ptq_path = ptq_out or os.path.join(workdir, "ptq.onnx")
        export(qat, list(unseen[:4]), ptq_path)
        before = score(_run(ptq_path, unseen), reference, labels, classification)
        fitted, held = _spread_split(train, 10, 8)  # (4) validation
        axes, out_axes = batch_axes(qat.qdq)  # the graph's inputs and outputs, as the file has them
        loader = batches([train[i] for i in fitted], [teacher[i] for i in fitted], batch, seed, axes, out_axes)
        validation = batches([train[i] for i in held], [teacher[i] for i in held], batch, seed, axes, out_axes)
        held_feeds, held_teacher = [train[i] for i in held], [teacher[i] for i in held]
        kernels = saturating(qat)
        if kernels:  # (6)
            validate = lambda m: _deployed_sqnr(m, held_feeds, held_teacher)  # noqa: E731
        else:
            validate = lambda m: _sqnr(m, validation)  # noqa: E731
        untrained = copy.deepcopy(qat.state_dict())  # (7)
        untrained_noise = noise_per_input(_exported_outputs(qat, held_feeds), held_teacher)
        history = fit(qat, loader, distillation_loss(classification, scales), epochs, lr=lr, step_lr=step_lr,
                      amp=amp, freeze_bn_after=freeze_bn_after, validate=validate,
                      progress=progress, device=device)
        qat.to("cpu")
        gain = None
        if history.best_epoch:  # (7) a gain on the held-out inputs beyond their spread, or the untrained model
            qat.eval()
            clear, mean, error = clear_gain(untrained_noise, noise_per_input(_exported_outputs(qat, held_feeds),
                                                                            held_teacher))
            gain = {"epoch": history.best_epoch, "mean_db": round(mean, 2), "standard_error_db": round(error, 2),
                    "kept": clear}
            if not clear:
                qat.load_state_dict(untrained)
                history.best_epoch = 0
        del untrained
        checked = export(qat, list(unseen[:8]), out)
        after = score(_run(checked.path, unseen), reference, labels, classification)
        fp32_score = score(reference, reference, labels, classification)
    return {
        "model": fp32, "config": config.to_dict(), "epochs": epochs, "amp": history.amp, "samples": len(train),
        "eval_samples": len(unseen), "device": device, "fp32": fp32_score, "ptq": before, "qat": after,
        "losses": [round(x, 6) for x in history.losses], "train_seconds": round(history.seconds, 1),
        "validation_sqnr_db": [round(x, 2) for x in history.scores], "best_epoch": history.best_epoch,
        "validated_on": "onnxruntime's kernels" if kernels else "torch", "gain_check": gain,
        "seconds": round(time.perf_counter() - start, 1),
        "export_check": {"tensors": checked.tensors, "worst_tensor": checked.worst_tensor,
                         "within_one_step": round(checked.worst_agreement, 5),
                         "output_max_abs_diff": round(checked.output_max_abs, 6), "samples": checked.samples,
                         "fused": checked.fused},
        "path": checked.path,
    }


def qat_zoo(name: str, out: str, *, samples: int = 1024, eval_samples: int = 200, fp32_path: str | None = None,
            **options: Any) -> dict[str, Any]:
    """Train zoo model ``name`` with QAT (``distill`` on its own data), write the QDQ model to
    ``out``; ``fp32_path``: the model already exported (else exported here); ``options``: those of
    ``distill`` (``epochs``, ``config``, ``amp``, ``ptq_out`` to keep the untrained model ...)."""
    from edgeq import zoo
    from edgeq.exporter import export as export_torch
    from edgeq.io import check_output_path

    spec = zoo.get(name)
    check_output_path(out)
    classification = spec.task == "classification"
    with tempfile.TemporaryDirectory(prefix="edgeq-qat-") as workdir:
        fp32 = fp32_path or os.path.join(workdir, f"{name}.fp32.onnx")
        if fp32_path is None:
            export_torch(name, fp32)
        summary = distill(fp32, spec.calibration_data(samples, seed=0), spec.eval_data(eval_samples), out,
                          classification=classification,
                          labels=spec.eval_labels(eval_samples) if classification else None,
                          batchnorms_from=spec.build(), **options)
    summary["model"] = name
    return summary


def qat_file(path: str, out: str, calib: Any, eval_data: Any = None, *, loss: str = "mse", **options: Any) -> dict[str, Any]:
    """QAT of an ONNX file distilled on unlabeled inputs (``edgeq qat IN.onnx --calib DIR``):
    ``calib`` trains (anything ``edgeq.quantize`` takes); ``eval_data`` judges, or else a fifth
    of ``calib``, spread over it by loudness, is held out for it. ``loss``: "mse" (variance-scaled, any output) or "kl"
    (outputs that are class logits)."""
    from edgeq.calibrate import load_data
    from edgeq.errors import UsageError
    from edgeq.io import as_model, check_model_path

    if loss not in ("mse", "kl"):
        raise UsageError(f"loss {loss!r}: choose mse or kl")
    path = check_model_path(path)
    model, _ = as_model(path)
    feeds = list(load_data(calib, model))
    if eval_data is not None:
        unseen = list(load_data(eval_data, model))
    else:
        kept, judged = _spread_split(feeds, 5, 1)
        feeds, unseen = [feeds[i] for i in kept], [feeds[i] for i in judged]
    return distill(path, feeds, unseen, out, classification=loss == "kl", **options)
