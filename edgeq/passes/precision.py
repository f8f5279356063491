"""Per-node precision requests (``QuantConfig.precision``): checked by name against the graph.

    check_precision_names(config, graph)   # UsageError for an fp16/int16 name the graph lacks

Names are those of the prepared model (``edgeq inspect`` lists them; auto mode passes its units'
names). ``fp32`` entries may also name op types, and an fp32 name the graph lacks is harmless (it
keeps nothing float), as ``--exclude`` always was; ``int8-per-token`` and ``int8-dynamic`` entries may name op types
present in the graph (select.py rule 12). The decisions themselves are select.py rule 8
(int16) and fp16.py case 6 (fp16); a node given two precisions is refused by ``QuantConfig``.
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.config import QuantConfig
from edgeq.errors import UsageError

__all__ = ["check_precision_names"]


def check_precision_names(config: QuantConfig, graph: ir.Graph) -> None:
    names = {n.name for n in ir.traversal.RecursiveGraphIterator(graph) if n.name}  # subgraphs too (select.py (11))
    ops = {n.op_type for n in ir.traversal.RecursiveGraphIterator(graph)}  # int8-per-token/-dynamic may name an op type
    for name, precision in config.precision.items():
        if precision != "fp32" and name not in names and not (precision in ("int8-per-token", "int8-dynamic") and name in ops):
            raise UsageError(f"precision names {name!r} ({precision}), which is not a node of the prepared model: "
                             "use the node names `edgeq inspect MODEL` (or the report's node list) shows")
