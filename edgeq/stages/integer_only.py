"""Stage 6, ``integer_only`` (``--format qoperator``): the QDQ model rewritten into integer
operators (``edgeq.passes.pipeline.integer_only_passes``), and the report's ``qoperator``
section: what was rewritten, what was not and why, the float islands and requantizations left,
and per layer the fixed-point multipliers and shifts of the integer reference (``layers``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import onnx_ir as ir

    from edgeq.config import QuantConfig

__all__ = ["integer_only"]

_P = TypeVar("_P")


def _one(passes: list, kind: type[_P]) -> _P:
    (found,) = [p for p in passes if isinstance(p, kind)]
    return found


def integer_only(model: ir.Model, config: QuantConfig) -> dict[str, Any]:
    """Rewrite ``model`` (QDQ form) in place into integer operators; return the report section.

    ``config.integer_only`` also rewrites value-moving ops between different scales (with a
    requantization) and warns about float islands left; ``config.strict`` raises
    ``UnsupportedError`` naming them."""
    from edgeq.graph import run_passes
    from edgeq.passes.pipeline import integer_only_passes
    from edgeq.passes.qoperator import FloatIslandsPass, QOperatorPass
    from edgeq.reference import export_params

    passes = integer_only_passes(config)
    run_passes(model, passes)
    rewrite, islands = _one(passes, QOperatorPass), _one(passes, FloatIslandsPass)
    section = {
        "format": "qoperator",
        "integer_only": config.integer_only,
        "rewritten": rewrite.rewritten,
        # nodes a later rule or the cleanup removed are no longer left in float
        "not_rewritten": [r for node, r in rewrite.not_rewritten.items() if node.graph is model.graph],
        "float_islands": islands.islands,
        "requantizations": islands.requantizations,
    }
    section["layers"] = export_params(model, partial=True)["layers"]  # float islands are skipped
    return section
