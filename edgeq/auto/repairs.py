"""The repairs auto tries before keeping any layer float; each returns a repaired copy or None.

* ``equalize``: cross-layer equalization (``edgeq.passes.equalize``) where conv pairs exist;
  Clip(0, c) between them only when calibration shows it never reaches ``c``.
* ``smooth``: SmoothQuant (``edgeq.passes.smoothquant``) on MatMul/Gemm inputs whose channel
  maxima have outliers.
* ``correct_bias``: bias correction (``edgeq.passes.bias_correction``) from the calibrated input
  means, for the weight granularity the quantizer will use.
"""

from __future__ import annotations

from typing import Any

from edgeq.config import PerTensor, QuantConfig

__all__ = ["REPAIRS", "equalize", "smooth", "smooth_per_token", "correct_bias"]


def _copy(model: Any) -> Any:
    from edgeq.graph import copy_model

    return copy_model(model)


def _freeze(model: Any) -> None:
    """A repaired float model is the base of many variants, like the prepared one (workbench.prepare_float)."""
    from edgeq.graph import freeze_constants

    freeze_constants(model)


def _clip_max(node: Any) -> float | None:
    def const(i: int) -> Any:
        v = node.inputs[i] if len(node.inputs) > i else None
        return None if v is None or v.const_value is None else float(v.const_value.numpy())

    return const(2) if const(1) == 0.0 else None


def equalize(model: Any, cal: Any, config: QuantConfig) -> tuple[Any | None, str]:
    from edgeq.passes.equalize import EqualizeCrossLayerPass

    safe = []
    for node in model.graph:
        if node.op_type == "Clip" and node.inputs and node.inputs[0] is not None:
            top, name = _clip_max(node), node.inputs[0].name
            if top is not None and name in cal and cal.observers[name].max <= top:
                safe.append(name)
    copy = _copy(model)
    cle = EqualizeCrossLayerPass(clip_as_relu=safe)
    pairs = len(cle.pairs(copy.graph))
    if not cle(copy).modified:
        return None, "no Conv -> (Relu) -> Conv pairs (a Clip that saturates on the data is not equalized)"
    _freeze(copy)
    return copy, f"{pairs} conv pair(s) equalized (before ReLU6 rewrites); {len(cle.notes)} ReLU6 never saturating -> Relu"


def smooth(model: Any, cal: Any, config: QuantConfig) -> tuple[Any | None, str]:
    from edgeq.passes.smoothquant import SmoothQuantPass

    absmax = {name: cal.channel_absmax(name) for name in cal.channels}
    absmax = {k: v for k, v in absmax.items() if v is not None}
    copy = _copy(model)
    sq = SmoothQuantPass(absmax, alpha=0.5)
    if not sq(copy).modified:
        return None, "no MatMul/Gemm input with outlier channels (max/median < 4)"
    _freeze(copy)
    worst = max(sq.smoothed.items(), key=lambda kv: kv[1])
    return copy, f"{len(sq.smoothed)} MatMul input(s) smoothed (alpha 0.5; worst channel ratio {worst[1]:.1f} on {worst[0]!r})"


def smooth_per_token(model: Any, cal: Any, config: QuantConfig, alpha: float) -> tuple[Any | None, str]:
    """SmoothQuant for per-token MatMuls: every MatMul/Gemm input whose channels spread 2x or more,
    a ``Mul`` on the MatMul branch where the input also feeds other ops (a LayerNorm output read
    by the residual Add: ``SmoothQuantPass(partial=True)``)."""
    from edgeq.passes.smoothquant import SmoothQuantPass

    absmax = {name: cal.channel_absmax(name) for name in cal.channels}
    absmax = {k: v for k, v in absmax.items() if v is not None}
    copy = _copy(model)
    sq = SmoothQuantPass(absmax, alpha=alpha, min_ratio=2.0, partial=True)
    if not sq(copy).modified:
        return None, "no MatMul/Gemm input with outlier channels (max/median < 2)"
    _freeze(copy)
    return copy, f"{len(sq.smoothed)} MatMul input(s) smoothed (alpha {alpha:g})"


def channel_means(cal: Any) -> dict[str, Any]:
    """Each calibrated tensor's per-channel mean, where recorded: what bias correction reads."""
    means = {name: cal.channel_mean(name) for name in cal.channels}
    return {k: v for k, v in means.items() if v is not None}


def correct_bias(model: Any, cal: Any, config: QuantConfig, nodes: Any = None, means: Any = None) -> tuple[Any | None, str]:
    """Bias correction on ``nodes`` (default: every Conv/Gemm); only right where they end int8.
    ``means``: ``channel_means(cal)`` where already taken (a cluster's worker has no ``cal``)."""
    from edgeq.passes.bias_correction import BiasCorrectionPass

    means = channel_means(cal) if means is None else means
    copy = _copy(model)
    from edgeq.passes.weights import pairs_form, weight_qmax

    bc = BiasCorrectionPass(means, per_channel=not isinstance(config.granularity, PerTensor), nodes=nodes,
                            qmax=weight_qmax(config), paired=pairs_form(config))
    if not bc(copy).modified:
        return None, "no Conv/Gemm with calibrated input means"
    _freeze(copy)  # its new biases too: a copy of an unfrozen model goes through protobuf, and every
    # build would then quantize fresh weight arrays (no reuse; each kept by the cache: resnet224
    # auto grew ~35 MB a build to 5.2 GB)
    return copy, f"{len(bc.corrected)} layer bias(es) corrected"


# exact float rewrites, tried in this order; bias correction is applied per configuration (search)
REPAIRS = (("cross-layer equalization", equalize), ("SmoothQuant", smooth))
