"""GRU with int8 weights (issue 13, item 2): is an unrolled form faster than onnxruntime's fp32 GRU?

    .venv/bin/python bench/gru.py [--repeats 7] [--out FILE]

onnxruntime has no int8 GRU kernel (only DynamicQuantizeLSTM), so the one way to int8 GRU
weights in ONNX is to write the cell out. For single GRUs made in code (batch 1, input 64 or
256, hidden 128 or 256, 50 steps, PyTorch's ``linear_before_reset=1``), three models:

* fp32: the ONNX ``GRU`` op;
* unrolled fp32: the input projection of every step as one MatMul over the sequence (P = X W^T +
  b_W, [S, 3H]), then per step G = H R^T + b_R, z, r = sigmoid(P_zr + G_zr),
  n = tanh(P_n + r * G_n), H = n + z * (H - n): about 15 nodes a step;
* unrolled int8: the same with both MatMuls as com.microsoft.DynamicQuantizeMatMul (int8 weights
  per column, activations quantized at run time).

Latency: one session each, 1 intra-op thread, interleaved rounds (bench/_timing.py), median per
inference. Fidelity: SQNR of the last hidden state and of all hidden states vs the fp32 op.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from _timing import interleaved_ms  # noqa: E402

SHAPES = ((64, 128, 50), (64, 256, 50), (256, 256, 50), (256, 512, 50))  # input, hidden, steps


def _weights(rng, inp: int, hidden: int) -> dict[str, np.ndarray]:
    k = 1 / np.sqrt(hidden)
    return {"W": rng.uniform(-k, k, (1, 3 * hidden, inp)).astype(np.float32),
            "R": rng.uniform(-k, k, (1, 3 * hidden, hidden)).astype(np.float32),
            "B": rng.uniform(-k, k, (1, 6 * hidden)).astype(np.float32)}


def gru_op(w: dict, inp: int, hidden: int, steps: int):
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("GRU", ["x", "W", "R", "B"], ["y", "h"], hidden_size=hidden, linear_before_reset=1)
    graph = helper.make_graph([node], "gru", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps, 1, inp])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("h", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in w.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _quantized(name: str, array: np.ndarray, inits: list) -> list[str]:
    """int8 per-column symmetric weight [K, N] for DynamicQuantizeMatMul: (B, scale, zero point)."""
    from onnx import numpy_helper

    scale = np.maximum(np.abs(array).max(axis=0), 1e-12) / 127
    q = np.clip(np.rint(array / scale), -127, 127).astype(np.int8)
    inits += [numpy_helper.from_array(q, f"{name}_q"), numpy_helper.from_array(scale.astype(np.float32), f"{name}_s"),
              numpy_helper.from_array(np.zeros_like(q[0]), f"{name}_zp")]
    return [f"{name}_q", f"{name}_s", f"{name}_zp"]


def gru_unrolled(w: dict, inp: int, hidden: int, steps: int, int8: bool):
    """The cell written out for ``steps`` steps (module docstring)."""
    from onnx import TensorProto, helper, numpy_helper

    h3 = 3 * hidden
    wt, rt = w["W"][0].T.copy(), w["R"][0].T.copy()  # [I, 3H], [H, 3H]
    bw, br = w["B"][0, :h3], w["B"][0, h3:]
    inits = [numpy_helper.from_array(bw, "bw"), numpy_helper.from_array(br, "br"),
             numpy_helper.from_array(np.zeros((1, hidden), np.float32), "h0"),
             numpy_helper.from_array(np.array([2 * hidden, hidden], np.int64), "split_zr_n"),
             numpy_helper.from_array(np.array([hidden, hidden], np.int64), "split_z_r"),
             numpy_helper.from_array(np.array([steps], np.int64), "split_steps"),
             numpy_helper.from_array(np.array([steps, 1, hidden], np.int64), "y_shape"),
             numpy_helper.from_array(np.array([1, 1, hidden], np.int64), "h_shape")]
    nodes = [helper.make_node("Reshape", ["x", "x2d_shape"], ["x2d"])]
    inits.append(numpy_helper.from_array(np.array([steps, inp], np.int64), "x2d_shape"))

    def matmul(a: str, name: str, weight: np.ndarray, out: str) -> None:
        if int8:
            nodes.append(helper.make_node("DynamicQuantizeMatMul", [a, *_quantized(name, weight, inits)], [out],
                                          domain="com.microsoft"))
        else:
            inits.append(numpy_helper.from_array(weight, name))
            nodes.append(helper.make_node("MatMul", [a, name], [out]))

    matmul("x2d", "wt", wt, "xp")
    nodes.append(helper.make_node("Add", ["xp", "bw"], ["p"]))
    nodes.append(helper.make_node("Split", ["p", "split_steps_ones"], [f"p{t}" for t in range(steps)], axis=0))
    inits.append(numpy_helper.from_array(np.ones(steps, np.int64), "split_steps_ones"))
    if not int8:
        inits.append(numpy_helper.from_array(rt, "rt"))
    else:
        _quantized("rt", rt, inits)
    h = "h0"
    for t in range(steps):
        if int8:
            nodes.append(helper.make_node("DynamicQuantizeMatMul", [h, "rt_q", "rt_s", "rt_zp"], [f"g{t}"],
                                          domain="com.microsoft"))
        else:
            nodes.append(helper.make_node("MatMul", [h, "rt"], [f"g{t}"]))
        nodes += [
            helper.make_node("Add", [f"g{t}", "br"], [f"gb{t}"]),
            helper.make_node("Split", [f"p{t}", "split_zr_n"], [f"pzr{t}", f"pn{t}"], axis=1),
            helper.make_node("Split", [f"gb{t}", "split_zr_n"], [f"gzr{t}", f"gn{t}"], axis=1),
            helper.make_node("Add", [f"pzr{t}", f"gzr{t}"], [f"szr{t}"]),
            helper.make_node("Sigmoid", [f"szr{t}"], [f"zr{t}"]),
            helper.make_node("Split", [f"zr{t}", "split_z_r"], [f"z{t}", f"r{t}"], axis=1),
            helper.make_node("Mul", [f"r{t}", f"gn{t}"], [f"rg{t}"]),
            helper.make_node("Add", [f"pn{t}", f"rg{t}"], [f"sn{t}"]),
            helper.make_node("Tanh", [f"sn{t}"], [f"n{t}"]),
            helper.make_node("Sub", [h, f"n{t}"], [f"d{t}"]),
            helper.make_node("Mul", [f"z{t}", f"d{t}"], [f"zd{t}"]),
            helper.make_node("Add", [f"n{t}", f"zd{t}"], [f"h{t + 1}"]),
        ]
        h = f"h{t + 1}"
    nodes += [helper.make_node("Concat", [f"h{t + 1}" for t in range(steps)], ["ycat"], axis=0),
              helper.make_node("Reshape", ["ycat", "y_shape"], ["y"]),
              helper.make_node("Reshape", [h, "h_shape"], ["h"])]
    graph = helper.make_graph(nodes, "gru_unrolled",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps, 1, inp])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("h", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    err = float(np.square(ref.astype(np.float64) - got).sum())
    return float("inf") if err == 0 else 10 * np.log10(float(np.square(ref.astype(np.float64)).sum()) / err)


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None, help="write the table to this file")
    args = parser.parse_args(argv)
    rows = ["| GRU (input, hidden, steps; batch 1) | fp32 op ms | unrolled fp32 ms | unrolled int8 ms | "
            "int8 unrolled vs fp32 op | SQNR int8 (all states / last) |", "|---|---|---|---|---|---|"]
    for inp, hidden, steps in SHAPES:
        rng = np.random.default_rng(inp + hidden)
        w = _weights(rng, inp, hidden)
        feeds = [{"x": rng.normal(0, 1, (steps, 1, inp)).astype(np.float32)} for _ in range(4)]
        models = {"op": gru_op(w, inp, hidden, steps), "fp32": gru_unrolled(w, inp, hidden, steps, False),
                  "int8": gru_unrolled(w, inp, hidden, steps, True)}
        data = {k: m.SerializeToString() for k, m in models.items()}
        outs = {k: [ort.InferenceSession(v, providers=["CPUExecutionProvider"]).run(None, f) for f in feeds]
                for k, v in data.items()}
        for k in ("fp32", "int8"):  # the unrolled cell computes what the op does
            ys = [_sqnr(np.concatenate([o[0].ravel() for o in outs["op"]]), np.concatenate([o[0].ravel() for o in outs[k]]))]
            assert k == "int8" or ys[0] > 80, f"unrolled fp32 GRU differs from the op: {ys[0]:.1f} dB"
        all_db = _sqnr(np.concatenate([o[0].ravel() for o in outs["op"]]), np.concatenate([o[0].ravel() for o in outs["int8"]]))
        last_db = _sqnr(np.concatenate([o[1].ravel() for o in outs["op"]]), np.concatenate([o[1].ravel() for o in outs["int8"]]))
        ms = interleaved_ms(data, feeds, runs=None, repeats=args.repeats, warmup=3)
        rows.append(f"| {inp}, {hidden}, {steps} | {ms['op']:.3f} | {ms['fp32']:.3f} | {ms['int8']:.3f} | "
                    f"{ms['op'] / ms['int8']:.2f}x | {all_db:.1f} / {last_db:.1f} |")
        print(rows[-1], flush=True)
    table = "\n".join(rows) + "\n"
    print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
