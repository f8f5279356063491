"""BatchNorm folded into its convolution, with its statistics updating until frozen late in training.

    Conv(x, W, b) -> BatchNorm(gamma, beta, mean, var)     (the user's module; the exporter folds it)

    training, not yet frozen:  y = Conv(x, fq(W * sf)) / sf + b,  then BatchNorm on the batch's
                               statistics (which update the running ones);   sf = gamma / sqrt(var + eps)
    frozen, and in eval:       Conv(x, fq(W * sf), (b - mean) * sf + beta)   -- what is deployed

1. The weight quantizer sees the folded weight ``W * sf`` from the first step, so the grid it
   learns is the deployed one (Krishnamoorthi 2018, section 3.2; torch.ao's ``_ConvBnNd``).
2. Dividing by ``sf`` gives the unfolded convolution with the quantized weight, on which the batch
   statistics are taken; ``fit`` freezes them after ``freeze_bn_after`` of its steps, from where
   training runs the deployed arithmetic exactly.
4. The weight parameter is U = W * sf0, the folded weight at the start (sf0: the statistics
   read from the module), and W * sf = U * sf / sf0: the parameter lives on the quantizer's
   scale, so ``fit``'s learning rate in quantization steps means the same as without BatchNorm
   (in W's own units, a channel with a large sf would move by many steps per update).
3. Which convolution a BatchNorm was folded into comes from the dynamo exporter's node metadata
   (``FuseBatchNormIntoConv`` among ``pkg.onnxscript.rewriter.rule_name`` and the BatchNorm's module path
   in ``pkg.torch.onnx.name_scopes``); the module's own parameters and running statistics are read
   from the user's model. Without that metadata (TorchScript, an ONNX file) the statistics stay as
   folded: frozen from the start.
"""

from __future__ import annotations

import ast
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["FoldedBatchNorm", "batchnorms_of"]

_FUSED = "FuseBatchNormIntoConv"


class FoldedBatchNorm(nn.Module):
    """One BatchNorm's parameters and statistics beside the convolution it is folded into."""

    def __init__(self, gamma, beta, mean, var, eps: float, momentum: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.as_tensor(np.asarray(gamma, np.float32)).clone())
        self.beta = nn.Parameter(torch.as_tensor(np.asarray(beta, np.float32)).clone())
        self.register_buffer("running_mean", torch.as_tensor(np.asarray(mean, np.float32)).clone())
        self.register_buffer("running_var", torch.as_tensor(np.asarray(var, np.float32)).clone())
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))
        self.eps, self.momentum = float(eps), float(momentum)
        self.register_buffer("initial_scale", self.scale().detach().clone())  # (4)

    def scale(self) -> torch.Tensor:
        """sf = gamma / sqrt(running var + eps), per output channel."""
        return self.gamma / torch.sqrt(self.running_var + self.eps)

    @staticmethod
    def _channels(t: torch.Tensor, ndim: int) -> torch.Tensor:
        return t.reshape([-1] + [1] * (ndim - 1))

    def fold_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """(4) The folded weight W * sf, from the parameter U = W * sf at the start."""
        return weight * self._channels(self.scale() / self.initial_scale, weight.dim())

    def fold_bias(self, bias: torch.Tensor) -> torch.Tensor:
        return (bias - self.running_mean) * self.scale() + self.beta

    def unfold_bias(self, bias: np.ndarray) -> np.ndarray:
        """The convolution's own bias b from the folded one the exporter wrote."""
        sf = self.scale().detach().numpy().astype(np.float64)
        b = (bias.astype(np.float64).reshape(-1) - self.beta.detach().numpy()) / sf + self.running_mean.numpy()
        return b.astype(np.float32)

    def train_forward(self, y_quantized_folded: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """(2) The BatchNorm on the batch: ``y_quantized_folded`` is Conv(x, fq(W * sf)) without bias."""
        dtype = y_quantized_folded.dtype  # half precision under autocast: kept (fake_quant.py (3))
        sf = self._channels(self.scale(), y_quantized_folded.dim() - 1).to(dtype)
        y = y_quantized_folded / sf + self._channels(bias, y_quantized_folded.dim() - 1).to(dtype)
        return nn.functional.batch_norm(y, self.running_mean, self.running_var, self.gamma, self.beta,
                                        True, self.momentum, self.eps)


def batchnorms_of(module: Any, model: Any) -> dict[str, dict[str, Any]]:
    """(3) Conv node name -> the parameters of the BatchNorm the exporter folded into it."""
    found: dict[str, dict[str, Any]] = {}
    for node in model.graph:
        meta = node.metadata_props
        rules = [r.strip() for r in meta.get("pkg.onnxscript.rewriter.rule_name", "").split(",")]
        if node.op_type != "Conv" or _FUSED not in rules:
            continue
        try:
            scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
            bn = module.get_submodule(scopes[-2])
        except (ValueError, SyntaxError, AttributeError, IndexError):
            continue
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.running_var is None or not bn.affine:
            continue
        gamma = bn.weight.detach().numpy()
        if np.any(np.abs(gamma) < 1e-8):  # sf = 0: the convolution cannot be recovered; stays folded
            continue
        found[node.name] = {"gamma": gamma, "beta": bn.bias.detach().numpy(), "mean": bn.running_mean.numpy(),
                            "var": bn.running_var.numpy(), "eps": bn.eps, "momentum": bn.momentum or 0.1}
    return found
