"""Integer-only rewriting: QDQ graphs into QOperator form (QLinearConv, QLinearMatMul, ...).

One rule per file (pattern, a check that says why it does not match, a replacement);
``rewrite.py`` runs them and reports what stayed in float.
"""

from edgeq.passes.qoperator.cleanup import RemoveDeadQDQPass
from edgeq.passes.qoperator.rewrite import QOperatorPass, rewrite_qoperator, rules

__all__ = ["rewrite_qoperator", "QOperatorPass", "RemoveDeadQDQPass", "rules"]
