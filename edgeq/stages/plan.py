"""Stage 3, ``plan``: decide what is int8 and what stays float, and why.

The analysis passes (``edgeq.passes.pipeline.analysis_passes``) put float ops into forms that
have int8 kernels (still float, so calibration sees an equivalent graph) and fill a
``QuantPlan``: a role per node, the tensors that share one scale, the reasons for every node
left float."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from edgeq.errors import UnsupportedError

if TYPE_CHECKING:
    import onnx_ir as ir

    from edgeq.config import QuantConfig
    from edgeq.passes.plan import QuantPlan

__all__ = ["Planned", "plan"]


@dataclasses.dataclass
class Planned:
    """The plan, and each node's report label (taken before any rewrite renames or removes nodes)."""

    plan: QuantPlan
    labels: dict[ir.Node, str]

    def calibrated_roots(self) -> list[str]:
        """The activation tensors whose ranges calibration must supply (one per scale group)."""
        from edgeq.graph import const_array

        return [v.name for v in self.plan.roots() if const_array(v) is None]

    def snapshot(self) -> tuple[dict[ir.Node, dict[str, Any]], list[str]]:
        """(activation scales per int8 node, the float tensors quantized), before the rewrite
        changes the inputs they are read from."""
        from edgeq.graph import const_array
        from edgeq.report.quant_report import activation_params

        activations = activation_params(self.plan, self.labels)
        tensors = [v.name for v in self.plan.values if const_array(v) is None and not v.is_graph_output() and v.name]
        return activations, tensors


def plan(model: ir.Model, config: QuantConfig) -> Planned:
    """Run the analysis passes on ``model`` (in place) and return the plan they filled."""
    from edgeq.graph import run_passes
    from edgeq.passes.pipeline import analysis_passes
    from edgeq.passes.plan import QuantPlan
    from edgeq.report.quant_report import node_labels

    if model.opset_imports.get("", 0) < 13:
        raise UnsupportedError(f"opset {model.opset_imports.get('')} is below 13 (needed for per-channel "
                               "DequantizeLinear): pass --opset 13 or re-export")
    quant_plan = QuantPlan()
    run_passes(model, analysis_passes(config, quant_plan))
    return Planned(quant_plan, node_labels(model.graph))
