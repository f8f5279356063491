"""Integer-only rewriting: QDQ graphs into QOperator form (QLinearConv, QLinearMatMul, ...).

One rule per file (pattern, a check that says why it does not match, a replacement);
``rewrite.py`` runs them, ``islands.py`` reports what stayed in float, and
``edgeq.passes.pipeline.integer_only_passes`` lists the passes in order
(``edgeq.stages.integer_only`` runs them and builds the report section).
"""

from edgeq.passes.qoperator.cleanup import RemoveDeadQDQPass
from edgeq.passes.qoperator.islands import FloatIslandsPass
from edgeq.passes.qoperator.rewrite import QOperatorPass, rules

__all__ = ["QOperatorPass", "RemoveDeadQDQPass", "FloatIslandsPass", "rules"]
