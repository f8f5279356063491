"""Per-node precision requests (``QuantConfig.int16_nodes``, ``fp16_nodes``): checked by name.

    check_precision_names(config, graph)   # UsageError for a name the graph lacks, or in both lists

Names are those of the prepared model (``edgeq inspect`` lists them; auto mode passes its units'
names). The decisions themselves are select.py rule 8 (int16) and fp16.py case 6 (fp16).
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.config import QuantConfig
from edgeq.errors import UsageError

__all__ = ["check_precision_names"]


def check_precision_names(config: QuantConfig, graph: ir.Graph) -> None:
    names = {n.name for n in graph if n.name}
    for field in ("int16_nodes", "fp16_nodes"):
        unknown = [n for n in getattr(config, field) if n not in names]
        if unknown:
            raise UsageError(f"{field} names {unknown[0]!r}, which is not a node of the prepared model: "
                             "use the node names `edgeq inspect MODEL` (or the report's node list) shows")
    both = sorted(set(config.int16_nodes) & set(config.fp16_nodes))
    if both:
        raise UsageError(f"node {both[0]!r} is in both int16_nodes and fp16_nodes: choose one precision")
