"""Auto on a transformer below opset 21: the search runs on the model raised to opset 21.

    config, note = lifted(given, prepared, config)   # config.opset = 21, or config as it was ("")

1. Why: a per-token MatMul's front quantizes each row of its input with that row's own scale
   (``passes/per_token.py`` (3)). From opset 21 one ``QuantizeLinear`` with ``block_size`` = K
   does that; below it the same levels (up to ties) come from Mul, Add and Cast. The blocked form
   is faster: MiniLM with every weighted MatMul per token, 1 thread, 1.48x and 1.49x fp32 at its
   own opset 18 against 1.53x and 1.57x at opset 21 on the development CPU (AMD EPYC without
   VNNI; ``docs/per_token.md``: 7-10% on the AVX512-VNNI Xeon), at the same SQNR (26.35 and 26.33
   dB on 48 unseen sentences).
2. When: the user gave no ``opset``, the model's default-domain opset is below 21, and it has at
   least ``MIN_ROWS_MATMULS`` MatMuls with a constant 2-D weight whose other input has rank 3 or
   more (the Q, K, V, output and feed-forward projections of transformer blocks: the MatMuls
   auto tries per token). CNNs (one Gemm at the end) keep their opset.
3. The answer then needs opset 21 (onnxruntime 1.18 or newer); a per-token answer needs
   onnxruntime's own contrib operators anyway (``MatMulIntegerToFloat``). A float answer is the
   model as given (``placement.float_answer``: a changed graph must measure faster), at its own
   opset. ``--opset N`` keeps the user's choice. Where the converter cannot raise the model,
   the search runs at the model's own opset (``search.auto_quantize``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["lifted", "rows_matmuls", "LIFT_OPSET", "MIN_ROWS_MATMULS"]

LIFT_OPSET = 21  # the first opset with a blocked QuantizeLinear
MIN_ROWS_MATMULS = 4  # (2) one transformer block has 6 (Q, K, V, output, two feed-forward)


def rows_matmuls(model: Any) -> int:
    """(2) MatMuls of ``model``'s main graph with a constant 2-D weight and another input of rank >= 3."""
    count = 0
    for node in model.graph:
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            continue
        a, w = node.inputs[0], node.inputs[1]
        if w is None or a is None or w.const_value is None or len(w.const_value.shape) != 2:
            continue
        if a.shape is not None and len(a.shape) >= 3:
            count += 1
    return count


def lifted(given: Any, prepared: Any, config: Any) -> tuple[Any, str]:
    """(``config`` with ``opset`` = ``LIFT_OPSET`` where (2) holds, and the report's note), else
    (``config``, ""). ``given``: the model as the user gave it (its opset); ``prepared``: it
    prepared at that opset (shapes inferred: the MatMuls' ranks)."""
    opset = given.opset_imports.get("", given.opset_imports.get("ai.onnx", 1))
    if config.opset is not None or prepared.opset_imports.get("", 1) >= LIFT_OPSET:
        return config, ""
    found = rows_matmuls(prepared)
    if found < MIN_ROWS_MATMULS:
        return config, ""
    return config.replace(opset=LIFT_OPSET), (
        f"the search ran on the model raised from opset {opset} to {LIFT_OPSET} ({found} MatMuls over rows of "
        f"tokens: a per-token MatMul's rows are quantized by one blocked QuantizeLinear there, faster than the "
        f"elementwise form below {LIFT_OPSET}); an int8 answer needs onnxruntime 1.18 or newer (--opset {opset} "
        f"keeps the model's own opset)")
