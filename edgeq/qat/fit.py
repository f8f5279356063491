"""``fit``: the common fine-tuning loop for a QAT module, with mixed precision.

    history = fit(qat, loader, loss_fn, epochs=3, amp="bf16")   # loader yields (inputs, target)

1. ``amp``: None (float32), "bf16" or "fp16": the forward runs under ``torch.autocast`` on the
   device's type; "fp16" scales the loss with ``torch.amp.GradScaler`` (bfloat16 has float32's
   exponent and needs none). The fake quantizers compute in float32 regardless (fake_quant.py 3).
2. Adam, whose steps are about its learning rate whatever the gradient, so each quantized weight
   tensor moves by ``step_lr`` of its quantization step per step (the same learning rate would be
   noise for 8-bit weights and slow for 4-bit ones); the scales by ``scale_lr`` of themselves
   (they are trained as logarithms); float parameters (biases, LayerNorm, layers left float) at
   ``lr``: by default (``float_lr``) 1e-5 with 8-bit weights and 1e-4 with 4-bit ones. At 8
   bits the error they help absorb is 16x smaller, and at 1e-4 they drifted to the training
   data's particulars: the zoo's vad, 47.6 dB after PTQ, came out of 3 epochs at 43.6 dB on its
   evaluation split (47.9 at 1e-5); at 4 bits 1e-5 is too slow (vad 34.0 -> 30.7 dB)
   (``bench/qat_float_lr.py``). A linear warm-up over the first tenth of the steps (Adam's first steps, before its
   moments settle, would otherwise throw a calibrated model off), then a cosine to zero.
3. ``freeze_after``: the share of the run after which observed scales stop moving (observed
   mode) - the usual late freeze, so the last steps train against the grid that is exported.
   ``freeze_bn_after`` (half the run): the same for the statistics of BatchNorms folded into
   convolutions (``batchnorm.py``); from there training runs the deployed arithmetic exactly.
4. ``validate(model) -> score`` (higher is better; on data held out from training): scored
   before training and after each epoch, and the best state is kept, the untrained one included,
   so fine-tuning never returns a model worse than it started on that data.
5. A rich progress bar per step (``progress=False`` to hide); returns the mean loss and the
   validation score per epoch, and the seconds taken.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from edgeq.errors import UsageError

__all__ = ["fit", "float_lr", "FitHistory", "AMP"]

AMP = {None: None, "none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass
class FitHistory:
    losses: list[float]
    seconds: float
    steps: int
    amp: str | None
    scores: list[float] = dataclasses.field(default_factory=list)  # validation: before training, then per epoch
    best_epoch: int | None = None  # 0: the untrained model was best


def _score(model: torch.nn.Module, validate: Callable[[torch.nn.Module], float]) -> float:
    model.eval()
    with torch.no_grad():
        value = float(validate(model))
    model.train()
    return value


def _call(model: torch.nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, device) for v in x)
    return x


def float_lr(model: torch.nn.Module) -> float:
    """(2) ``fit``'s default learning rate for float parameters: 1e-5 where ``model``'s weights are
    8-bit (a QATModel's ``weight_bits``), 1e-4 otherwise (4-bit weights, any other module)."""
    return 1e-5 if getattr(model, "weight_bits", None) == 8 else 1e-4


def _groups(model: torch.nn.Module, lr: float, step_lr: float, scale_lr: float) -> list[dict]:
    """(2) One group per quantized weight at ``step_lr`` of its mean step, the scales (log domain)
    at ``scale_lr``, everything else at ``lr``."""
    weights = getattr(model, "weights", [])
    groups, taken = [], set()
    for ref in weights:
        param = model.params[ref.param] if ref.param in model.params else None
        if param is None or id(param) in taken:
            continue
        step = float(model.quants[ref.quant].step().mean())
        groups.append({"params": [param], "lr": step_lr * step})
        taken.add(id(param))
    scales = [p for n, p in model.named_parameters() if n.startswith("quants.")]
    taken |= {id(p) for p in scales}
    if scales:
        groups.append({"params": scales, "lr": scale_lr})
    rest = [p for p in model.parameters() if id(p) not in taken and p.requires_grad]
    if rest:
        groups.append({"params": rest, "lr": lr})
    return groups


def fit(model: torch.nn.Module, loader: Iterable, loss_fn: Callable[[Any, Any], torch.Tensor], epochs: int = 1, *,
        lr: float | None = None, step_lr: float = 0.01, scale_lr: float = 1e-3, amp: str | None = None,
        device: str = "cpu", freeze_after: float = 0.8, freeze_bn_after: float = 0.5,
        validate: Callable[[torch.nn.Module], float] | None = None, progress: bool = True) -> FitHistory:
    """Train ``model`` (a QATModel, or any module) in place; see the module doc."""
    if amp not in AMP:
        raise UsageError(f"amp={amp!r}: choose none, bf16 or fp16")
    if epochs < 1:
        raise UsageError(f"epochs={epochs}: train at least one epoch")
    dtype = AMP[amp]
    dev = torch.device(device)
    model.to(dev).train()
    quants = getattr(model, "quants", None)
    optimizer = torch.optim.Adam(_groups(model, float_lr(model) if lr is None else lr, step_lr, scale_lr))
    batches = list(loader) if not hasattr(loader, "__len__") else loader
    per_epoch = len(batches)
    total = max(epochs * per_epoch, 1)
    base = [g["lr"] for g in optimizer.param_groups]
    scaler = torch.amp.GradScaler(dev.type) if dtype == torch.float16 else None
    losses: list[float] = []
    scores: list[float] = []
    best_state, best_epoch = None, None
    if validate is not None:  # (4)
        scores.append(_score(model, validate))
        best_state, best_epoch = copy.deepcopy(model.state_dict()), 0
    step = 0
    start = time.perf_counter()
    bar = _bar(progress, total)
    with bar:
        task = bar.add_task("quantization-aware training", total=total) if bar else None
        for _ in range(epochs):
            running, count = 0.0, 0
            for inputs, target in batches:
                inputs, target = _to(inputs, dev), _to(target, dev)
                if quants is not None and step >= freeze_after * total:  # (3)
                    for fq in quants.values():
                        fq.observing = False
                if step >= freeze_bn_after * total:  # (3) BatchNorm statistics
                    for bn in getattr(model, "bns", {}).values():
                        bn.frozen.fill_(True)
                warm = min(1.0, (step + 1) / max(total // 10, 1))  # (2) linear warm-up, then cosine
                for group, lr0 in zip(optimizer.param_groups, base):
                    group["lr"] = lr0 * warm * 0.5 * (1 + math.cos(math.pi * step / total))
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device_type=dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    out = _call(model, inputs)
                    loss = loss_fn(out, target)
                if not torch.isfinite(loss):
                    raise UsageError(f"the loss is {float(loss)} at step {step}: lower lr, or check loss_fn and the data")
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                running, count, step = running + float(loss.detach()), count + 1, step + 1
                if bar:
                    bar.update(task, advance=1, description=f"quantization-aware training, loss {running / count:.4g}")
            losses.append(running / max(count, 1))
            if validate is not None:
                scores.append(_score(model, validate))
                if scores[-1] > scores[best_epoch]:
                    best_state, best_epoch = copy.deepcopy(model.state_dict()), len(scores) - 1
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitHistory(losses, time.perf_counter() - start, step, amp if dtype is not None else None, scores, best_epoch)


class _NoBar:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None

    def __bool__(self) -> bool:
        return False


def _bar(progress: bool, total: int) -> Any:
    if not progress:
        return _NoBar()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True)
