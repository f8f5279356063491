"""Stage 5, ``rewrite``: the plan carried out (``edgeq.passes.pipeline.rewrite_passes``):
weights quantized, Q/DQ pairs inserted with the calibrated scales, dynamic MatMuls and int8
Gather tables, fp16 regions."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx_ir as ir

    from edgeq.config import QuantConfig
    from edgeq.stages.plan import Planned

__all__ = ["rewrite"]


def rewrite(model: ir.Model, planned: Planned, config: QuantConfig) -> None:
    """Run the rewrite passes on ``model`` in place.

    Values the passes create are named by their own graph, which knows nothing of the graphs
    around it: two If branches (or a branch and the main graph) can each get a ``val_0``, and
    ONNX wants one name per value across a graph and every body inside it. Where the model has
    bodies, onnx_ir's NameFixPass renames the clashes (graph inputs and outputs keep theirs)."""
    from onnx_ir.passes.common import NameFixPass

    from edgeq.graph import run_passes
    from edgeq.passes.pipeline import rewrite_passes

    run_passes(model, rewrite_passes(config, planned.plan))
    if next(iter(model.graph.subgraphs()), None) is not None:
        NameFixPass()(model)
