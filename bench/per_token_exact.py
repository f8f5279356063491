"""Per-token MatMuls as a CPU with VNNI computes them: the fidelity of every MatMul per token,
7- vs 8-bit weights, outlier channels on and off, from the kernel of this CPU and from its exact
arithmetic.

    .venv/bin/python bench/per_token_exact.py [--models minilm,tiny_transformer] [--calib 32] [--eval 48]

Each model (``bench/generalization.py``'s cases: zoo models with their eval split, real models
with other fonts and photos) is quantized with every weighted MatMul/Gemm ``int8-per-token``
(``QuantConfig(precision=...)``, static mode, calibration feeds), then scored on the unseen feeds:
SQNR of the first output against fp32, mean over samples and worst sample.

Two scores per model file:

- ``kernel``: onnxruntime's MatMulIntegerToFloat on this CPU. Without VNNI (AVX2) its u8s8 kernel
  adds pairs of uint8 x int8 products in int16 and saturates with 8-bit weights
  (docs/quantization.md, "CPUs that saturate 8-bit products"), which is why edgeq gives such CPUs
  7-bit weights.
- ``exact``: the same file with each MatMulIntegerToFloat(A_q, W_q, s_a, s_w, 128, 0) replaced by
  its arithmetic in float32, ``((A_q - 128) @ (W_q * s_w)) * s_a``: what a CPU with VNNI
  (``vpdpbusd``, int32 accumulation) computes, up to float rounding. Everything else in the file
  (the row scales, the centre's and the outlier channels' corrections) runs as written. So the
  emulation covers models whose weighted ops are all MatMul/Gemm (transformer encoders): a
  model's QLinearConv and DynamicQuantizeLSTM saturate here with 8-bit weights in both columns
  (ddddocr_rec: 7.6 dB at 8 bits, 26.7 at 7).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def exact_arithmetic(path: str, out: str) -> None:
    """``path`` with its MatMulIntegerToFloat and DynamicQuantizeMatMul nodes as float
    arithmetic, written to ``out``: ``((A_q - zp_a) @ (W_q * s_w)) * s_a (+ bias)``, A_q from a
    DynamicQuantizeLinear for the latter (weights' zero points are 0: symmetric int8)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(path)
    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for n in model.graph.node:
        if n.op_type not in ("MatMulIntegerToFloat", "DynamicQuantizeMatMul"):
            nodes.append(n)
            continue
        p = n.name
        if n.op_type == "DynamicQuantizeMatMul":  # A, W_q, s_w, zp_w[, bias]
            nodes.append(helper.make_node("DynamicQuantizeLinear", [n.input[0]], [f"{p}_aq", f"{p}_as", f"{p}_az"]))
            a_q, w_q, s_a, s_w, zp_a = f"{p}_aq", n.input[1], f"{p}_as", n.input[2], f"{p}_az"
            bias = n.input[4] if len(n.input) > 4 else ""
        else:  # A_q, W_q, s_a, s_w, zp_a, zp_w[, bias]
            a_q, w_q, s_a, s_w = n.input[:4]
            zp_a = n.input[4] if len(n.input) > 4 else ""
            bias = n.input[6] if len(n.input) > 6 else ""
        w = numpy_helper.to_array(inits[w_q]).astype(np.float32) * numpy_helper.to_array(inits[s_w]).astype(np.float32)
        model.graph.initializer.append(numpy_helper.from_array(w, f"{p}_w"))
        nodes.append(helper.make_node("Cast", [a_q], [f"{p}_af"], to=onnx.TensorProto.FLOAT))
        centred = f"{p}_af"
        if zp_a:
            nodes += [helper.make_node("Cast", [zp_a], [f"{p}_zf"], to=onnx.TensorProto.FLOAT),
                      helper.make_node("Sub", [f"{p}_af", f"{p}_zf"], [f"{p}_ac"])]
            centred = f"{p}_ac"
        scaled = n.output[0] if not bias else f"{p}_ys"
        nodes += [helper.make_node("MatMul", [centred, f"{p}_w"], [f"{p}_y"]),
                  helper.make_node("Mul", [f"{p}_y", s_a], [scaled])]
        if bias:
            nodes.append(helper.make_node("Add", [scaled, bias], [n.output[0]]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, out)


def _scores(path: str, feeds: list[dict], refs: list[np.ndarray]) -> tuple[float, float]:
    from edgeq.metrics import sqnr_db
    from edgeq.report.evaluate import cpu_session

    sess = cpu_session(open(path, "rb").read(), 1)
    values = [sqnr_db(ref, sess.run(None, f)[0]) for f, ref in zip(feeds, refs)]
    return float(np.mean(values)), float(np.min(values))


def main() -> None:
    import onnx
    from generalization import make_case

    import edgeq
    from edgeq.config import QuantConfig
    from edgeq.report.evaluate import cpu_session

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="minilm,tiny_transformer")
    parser.add_argument("--calib", type=int, default=32)
    parser.add_argument("--eval", type=int, default=48)
    parser.add_argument("--workdir", default=os.path.join("out", "bench", "generalization"))
    args = parser.parse_args()
    print("| model | weights | outlier channels | kernel here: mean / worst dB | exact (VNNI) arithmetic: mean / worst dB |")
    print("|---|---|---|---|---|")
    for name in args.models.split(","):
        case = make_case(name, args)
        ops = {n.op_type for n in onnx.load(case.path).graph.node} & {"MatMul", "Gemm"}
        fp32 = cpu_session(open(case.path, "rb").read(), 1)
        refs = [fp32.run(None, f)[0] for f in case.unseen]
        with tempfile.TemporaryDirectory() as tmp:
            for reduce_range in (True, False):
                for outliers in (False, True):
                    config = QuantConfig(precision=dict.fromkeys(ops, "int8-per-token"), outlier_channels=outliers,
                                         reduce_range=reduce_range)
                    path, exact = os.path.join(tmp, "q.onnx"), os.path.join(tmp, "exact.onnx")
                    edgeq.quantize(case.path, config, case.calib, progress=False).save(path)
                    exact_arithmetic(path, exact)
                    kernel, ideal = _scores(path, case.unseen, refs), _scores(exact, case.unseen, refs)
                    print(f"| {name} | {7 if reduce_range else 8}-bit | {'on' if outliers else 'off'} | "
                          f"{kernel[0]:.1f} / {kernel[1]:.1f} | {ideal[0]:.1f} / {ideal[1]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
