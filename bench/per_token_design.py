"""Candidate graphs for one per-token dynamic int8 MatMul, timed against fp32 and DynamicQuantizeMatMul.

    .venv/bin/python bench/per_token_design.py [--shape 1 128 384 1536] [--rounds 11]

A = [B, M, K] float (standard normal, one outlier channel x8 and one outlier token x10), W = [K, N]
int8 per output column. Every candidate computes s = max|A| per row / 127 (guarded) in the graph
and feeds MatMulIntegerToFloat or MatMulInteger; they differ in how A is quantized and in the
integer types. onnxruntime CPU, 1 thread, interleaved rounds of 40 runs, the median of the round
medians. SQNR of the output against A @ W in float64. The chosen form is passes/per_token.py.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _candidates(k: int, n: int, w_q: np.ndarray, w_scale: np.ndarray, w: np.ndarray) -> dict[str, bytes]:
    from onnx import TensorProto, helper, numpy_helper

    def init(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    consts = [init("Wq", w_q), init("ws", w_scale), init("wzp", np.int8(0)), init("W", w),
              init("ax", np.array([-1], np.int64)), init("inv127", np.float32(1 / 127)),
              init("tiny", np.float32(np.finfo(np.float32).tiny)), init("zp128", np.uint8(128)),
              init("zp0", np.int8(0)), init("f128", np.float32(128)), init("f1285", np.float32(128.5)),
              init("one", np.float32(1))]

    def model(nodes, opset=18):
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["b", "m", k])],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], consts)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                        helper.make_opsetid("com.microsoft", 1)])
        proto.ir_version = 10
        return proto.SerializeToString()

    def node(op, inputs, outputs, **kw):
        domain = "com.microsoft" if op == "MatMulIntegerToFloat" or op == "DynamicQuantizeMatMul" else ""
        return helper.make_node(op, inputs, outputs, domain=domain, **kw)

    front = [node("Abs", ["A"], ["abs"]), node("ReduceMax", ["abs", "ax"], ["mx"], keepdims=1),
             node("Mul", ["mx", "inv127"], ["s0"]), node("Max", ["s0", "tiny"], ["s"])]
    u8 = [node("Div", ["A", "s"], ["d"]), node("Round", ["d"], ["r"]), node("Add", ["r", "f128"], ["r2"]),
          node("Cast", ["r2"], ["q"], to=TensorProto.UINT8)]
    s8 = [node("Div", ["A", "s"], ["d"]), node("Round", ["d"], ["r"]), node("Cast", ["r"], ["q"], to=TensorProto.INT8)]
    mmi_u8 = node("MatMulIntegerToFloat", ["q", "Wq", "s", "ws", "zp128", "wzp"], ["Y"])
    scale_after = [node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT), node("Mul", ["accf", "s"], ["y0"]),
                   node("Mul", ["y0", "ws"], ["Y"])]
    return {
        "fp32 MatMul": model([node("MatMul", ["A", "W"], ["Y"])]),
        "DynamicQuantizeMatMul (per tensor)": model([node("DynamicQuantizeMatMul", ["A", "Wq", "ws", "wzp"], ["Y"])]),
        "blocked QuantizeLinear u8 + MatMulIntegerToFloat (opset 21)": model(front + [
            node("Shape", ["s"], ["sh"]),
            node("ConstantOfShape", ["sh"], ["zpb"], value=numpy_helper.from_array(np.array([128], np.uint8))),
            node("QuantizeLinear", ["A", "s", "zpb"], ["q"], axis=-1, block_size=k), mmi_u8], opset=21),
        "Div Round Add Cast u8 + MatMulIntegerToFloat": model(front + u8 + [mmi_u8]),
        "Mul(1/s) Add(128.5) Cast u8 + MatMulIntegerToFloat": model(front + [
            node("Div", ["one", "s"], ["inv"]), node("Mul", ["A", "inv"], ["d"]), node("Add", ["d", "f1285"], ["r2"]),
            node("Cast", ["r2"], ["q"], to=TensorProto.UINT8), mmi_u8]),
        "Div Round Cast s8 + MatMulIntegerToFloat s8s8": model(front + s8 + [
            node("MatMulIntegerToFloat", ["q", "Wq", "s", "ws", "zp0", "wzp"], ["Y"])]),
        "Div Round Add Cast u8 + MatMulInteger + Cast + 2 Mul": model(front + u8 + [
            node("MatMulInteger", ["q", "Wq", "zp128", "wzp"], ["acc"]), *scale_after]),
        "Div Round Cast s8 + MatMulInteger s8s8 + Cast + 2 Mul": model(front + s8 + [
            node("MatMulInteger", ["q", "Wq", "zp0", "wzp"], ["acc"]), *scale_after]),
    }


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[1, 128, 384, 1536], metavar=("B", "M", "K", "N"))
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    b, m, k, n = args.shape
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    a = rng.standard_normal((b, m, k)).astype(np.float32)
    a[..., 5] *= 8
    a[0, min(3, m - 1)] *= 10
    w_scale = (np.abs(w).max(0) / 127).astype(np.float32)
    w_q = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
    ref = a.astype(np.float64) @ w.astype(np.float64)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 1, 1, 3
    sessions = {name: ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
                for name, data in _candidates(k, n, w_q, w_scale, w).items()}
    sqnr = {name: 10 * np.log10((ref ** 2).sum() / ((ref - s.run(None, {"A": a})[0]) ** 2).sum())
            for name, s in sessions.items()}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for name, sess in sessions.items():
            runs = []
            for _ in range(40):
                start = time.perf_counter()
                sess.run(None, {"A": a})
                runs.append(time.perf_counter() - start)
            times[name].append(float(np.median(runs)))
    base = float(np.median(times["fp32 MatMul"]))
    print(f"A [{b},{m},{k}] x W [{k},{n}], onnxruntime {ort.__version__} CPU, 1 thread")
    print("| candidate | ms | vs fp32 | SQNR (dB) |\n|---|---|---|---|")
    for name in sessions:
        ms = float(np.median(times[name]))
        print(f"| {name} | {ms * 1e3:.3f} | {base / ms:.2f}x | {sqnr[name]:.1f} |")


if __name__ == "__main__":
    main()
