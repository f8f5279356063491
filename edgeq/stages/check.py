"""Stage 7, ``check``: the result is a valid ONNX model, and meets ``min_sqnr`` where asked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeq.errors import EdgeqError, FidelityError
from edgeq.io import EXTERNAL_DATA_THRESHOLD, inlined, weights_nbytes

if TYPE_CHECKING:
    import onnx_ir as ir

    from edgeq.config import QuantConfig

__all__ = ["check", "check_min_sqnr"]


def check(model: ir.Model) -> None:
    """``onnx.checker`` on ``model``; an EdgeqError naming the first problem (a bug of edgeq's)."""
    import onnx
    import onnx_ir as ir

    if weights_nbytes(model) > EXTERNAL_DATA_THRESHOLD:
        return  # the checker cannot take a >2 GB proto in memory
    try:
        with inlined(model):  # weights in another folder's external data: the checker reads them here
            proto = ir.to_proto(model)
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise EdgeqError(f"internal error: the quantized model fails onnx.checker ({str(e).splitlines()[0]}); "
                         "please report it, and --exclude the node concerned meanwhile") from None


def check_min_sqnr(report: dict[str, Any], config: QuantConfig) -> None:
    """FidelityError if an evaluated output's SQNR is below ``config.min_sqnr``."""
    if config.min_sqnr is None:
        return
    for name, metrics in report["evaluation"]["outputs"].items():
        sqnr = metrics.get("sqnr_db")
        if sqnr is not None and sqnr < config.min_sqnr:
            raise FidelityError(f"output {name!r} has SQNR {sqnr:.1f} dB, below --min-sqnr {config.min_sqnr}: "
                                "try --method entropy/percentile or --exclude the most sensitive layers")
