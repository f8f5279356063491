"""Per-node precision requests (``QuantConfig.precision``): checked by name against the graph.

    check_precision_names(config, graph)   # UsageError for an fp16/int16 name the graph lacks

Names are those of the prepared model (``edgeq inspect`` lists them; auto mode passes its units'
names). ``fp32`` entries may also name op types, and an fp32 name the graph lacks is harmless (it
keeps nothing float), as ``--exclude`` always was. The decisions themselves are select.py rule 8
(int16) and fp16.py case 6 (fp16); a node given two precisions is refused by ``QuantConfig``.
"""

from __future__ import annotations

import onnx_ir as ir

from edgeq.config import QuantConfig
from edgeq.errors import UsageError

__all__ = ["check_precision_names"]


def check_precision_names(config: QuantConfig, graph: ir.Graph) -> None:
    names = {n.name for n in graph if n.name}
    for name, precision in config.precision.items():
        if precision != "fp32" and name not in names:
            raise UsageError(f"precision names {name!r} ({precision}), which is not a node of the prepared model: "
                             "use the node names `edgeq inspect MODEL` (or the report's node list) shows")
