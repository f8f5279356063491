"""How closely the integer reference and onnxruntime agree on a model, op by op and at the end.

Op by op: every integer op of the reference is fed onnxruntime's own inputs, so each share
measures that op alone. End to end: the last integer tensor of each output (the input of the
final DequantizeLinear or float QGemm) from a full reference run vs onnxruntime's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["agreement"]


def _ort_values(memory, names: dict[str, int], feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnx
    import onnxruntime as ort

    from edgeq.runtime.memory import inference_session

    exposed = memory.proto()
    known = {o.name for o in exposed.graph.output}
    for name, elem in names.items():
        if name not in known:
            exposed.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 4  # errors reach the user once, as edgeq's one line
    sess = inference_session(memory.with_graph(exposed), so, ["CPUExecutionProvider"])
    outs = sess.run(None, feed)
    return dict(zip([o.name for o in exposed.graph.output], outs))


def _close(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    if np.issubdtype(want.dtype, np.floating):
        return np.isclose(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max() or 1))
    return np.abs(got.astype(np.int64) - want.astype(np.int64)) <= 1


def agreement(
    model: Any, feeds: list[dict[str, np.ndarray]], rounding: str = "single"
) -> dict[str, Any]:
    """Shares of elements within 1 LSB: ``per_op`` (worst op and each op) and ``end_to_end``."""

    from edgeq.io import as_model
    from edgeq.reference.interpreter import compile_model
    from edgeq.runtime.memory import in_memory

    irm, _ = as_model(model, copy=False)
    memory = in_memory(irm)
    program = compile_model(irm, rounding)
    names = {v.name: v.dtype.value for s in program.steps for v in s.node.outputs
             if v.name and v.dtype is not None}
    lasts = []
    for out in irm.graph.outputs:
        node = out.producer()
        if node is not None and node.op_type in ("DequantizeLinear", "QGemm"):
            lasts.append(node.inputs[0].name)
    consts = {v.name: v.const_value.numpy() for v in irm.graph.initializers.values()
              if v.const_value is not None}
    per_op: dict[str, list[float]] = {}
    end: list[np.ndarray] = []
    for feed in feeds:
        values = {**consts, **_ort_values(memory, names, feed), **feed}
        for step in program.steps:
            if step.node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                continue
            args = [None if v is None else values[v.name] for v in step.inputs]
            got = step.kernel.fn(args)[0]
            key = f"{step.node.op_type} {step.node.name}"
            close = _close(got, values[step.node.outputs[0].name])
            per_op.setdefault(key, []).append(float(close.mean()))
        ref = program.run(feed, intermediates=True)
        end += [_close(ref[name], values[name]).ravel() for name in lasts]
    shares = {k: float(np.mean(v)) for k, v in per_op.items()}
    return {
        "rounding": rounding,
        "per_op_worst": min(shares.values()) if shares else 1.0,
        "end_to_end": float(np.concatenate(end).mean()) if end else 1.0,
        "per_op": shares,
    }
