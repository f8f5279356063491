"""Per-token and weight-only forms of one bundled transformer against fp32 and auto, on one CPU.

    python bench/matmul_forms.py NAME BUNDLE OUTDIR [VARIANT,...]

NAME: a case written by ``bench/realworld.py --make-bundle BUNDLE``. Variants: auto (``edgeq
quantize`` defaults), uniform static int8 (its MatMuls dynamic per tensor, with and without
outlier channels), the same with the MatMuls that share an input (Q, K, V) per token, every
weighted MatMul per token (with and without
outlier channels, and at opset 21: one blocked QuantizeLinear), weight-only 8-bit MatMulNBits
with int8 compute (accuracy level 4, blocks of 32 and 128) and 4-bit. On a CPU that saturates
8-bit products (no VNNI) three more: every MatMul per token with narrow rows (``token_rows``
"narrow": 181 levels, 8-bit weights with pairs limited), with 127-level rows and 8-bit weights
(``pt_all_oc_a7``, a control: per_token.py's rows at 63 levels either side), and with 8-bit
weights stored uint8 (``pt_all_oc_u8w``, a control edgeq does not offer: the u8u8 kernel is
exact but slower). Each is scored on the
unseen feeds (SQNR over all, worst sample, 5th percentile, the task metric) and timed
interleaved with fp32 (``bench/_timing.py``, 8 unseen feeds, 5 rounds, twice at 1 and at 2
threads). Rows go to OUTDIR/NAME.json. Used on the GPU host's Xeon (docs/benchmarks.md, "With
outlier channels").
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


ROUNDS = int(os.environ.get("ROUNDS", 2))  # timing rounds per thread count (each 5 interleaved repeats)
THREADS = tuple(int(t) for t in os.environ.get("THREADS", "1,2").split(","))


def shared_inputs(path: str) -> list[str]:
    """Weighted MatMul/Gemm nodes whose input another weighted MatMul/Gemm reads too (attention's
    Q, K and V projections)."""
    import onnx

    graph = onnx.load(path).graph
    weights = {i.name for i in graph.initializer}
    readers: dict[str, list[str]] = {}
    for n in graph.node:
        if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in weights:
            readers.setdefault(n.input[0], []).append(n.name)
    return [name for names in readers.values() if len(names) > 1 for name in names]


def variants(ops: set[str], shared: list[str]) -> dict:
    from edgeq.config import QuantConfig

    per_token = dict.fromkeys(ops, "int8-per-token")
    return {
        "auto": None,
        "uniform": QuantConfig(mode="static"),  # MatMuls dynamic, per tensor, with outlier channels
        "uniform_nooc": QuantConfig(mode="static", outlier_channels=False),
        "mix_shared_pt": QuantConfig(mode="static", precision=dict.fromkeys(shared, "int8-per-token")),
        "pt_all_oc": QuantConfig(precision=per_token),
        "pt_all_nooc": QuantConfig(precision=per_token, outlier_channels=False),
        "pt_all_oc_o21": QuantConfig(precision=per_token, opset=21),
        "pt_all_oc_narrow": QuantConfig(precision=per_token, token_rows="narrow"),
        "pt_all_oc_a7": QuantConfig(precision=per_token, token_rows="narrow"),  # rows at 127 levels: _a7_rows
        "pt_all_oc_u8w": QuantConfig(precision=per_token, reduce_range=False),  # then _u8_weights
        "wo8_b32_acc4": QuantConfig(mode="weight-only", weights="int8", accuracy_level=4),
        "wo8_b128_acc4": QuantConfig(mode="weight-only", weights="int8", accuracy_level=4, granularity="per-block:128"),
        "wo4_b32_acc4": QuantConfig(mode="weight-only", weights="int4", accuracy_level=4),
    }


def _u8_weights(data: bytes) -> bytes:
    """(control) Every MatMulIntegerToFloat's int8 weights stored uint8 with zero point 128: the
    same levels, onnxruntime's u8u8 kernel (exact on CPUs without VNNI, slower there)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(data)
    inits = {t.name: t for t in model.graph.initializer}
    done: set[str] = set()
    for node in model.graph.node:
        if node.op_type != "MatMulIntegerToFloat":
            continue
        weight = inits[node.input[1]]
        if weight.name not in done:
            done.add(weight.name)
            levels = numpy_helper.to_array(weight).astype(np.int16) + 128
            weight.CopyFrom(numpy_helper.from_array(levels.astype(np.uint8), weight.name))
        zero = f"{weight.name}_zp_u8"
        if zero not in inits:
            inits[zero] = numpy_helper.from_array(np.array(128, np.uint8), zero)
            model.graph.initializer.append(inits[zero])
        node.input[5] = zero
    return model.SerializeToString()


def main() -> None:
    import _timing
    import generalization as g
    import onnx
    import realworld as rw

    import edgeq

    name, folder, outdir = sys.argv[1:4]
    only = sys.argv[4].split(",") if len(sys.argv) > 4 else None
    case = rw.load_bundled(name, folder)
    ops = {n.op_type for n in onnx.load(case.path, load_external_data=False).graph.node} & {"MatMul", "Gemm"}
    with open(case.path, "rb") as f:
        fp32 = f.read()
    reference = g._run(fp32, case.unseen)
    models, rows = {"fp32": fp32}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, config in variants(ops, shared_inputs(case.path)).items():
            if only and key not in only:
                continue
            try:
                start = time.time()
                if key == "pt_all_oc_a7":  # (control) 127-level rows: 63 either side of zero point 64
                    from unittest import mock

                    from edgeq.passes import per_token

                    with mock.patch.object(per_token, "row_form", lambda c: (63, None, 127)):
                        result = edgeq.quantize(case.path, config, case.calib, progress=False)
                else:
                    result = edgeq.quantize(case.path, config, case.calib, progress=False)
                seconds = time.time() - start
                path = os.path.join(tmp, f"{key}.onnx")
                result.save(path)
                with open(path, "rb") as f:
                    data = f.read()
                if key == "pt_all_oc_u8w":
                    data = _u8_weights(data)
                got = g._run(data, case.unseen)
                row = {"quantize_s": round(seconds, 1), "kb": len(data) // 1024, "ratio": round(len(fp32) / len(data), 3),
                       "sqnr": g.sqnr_figures(reference, got), "task": g.task_metric(case.task, reference, got).get("text")}
                if key == "auto":
                    row["verdict"] = result.report.get("auto", {}).get("verdict")
                rows[key], models[key] = row, data
                print(key, json.dumps(row, default=str), flush=True)
            except Exception as e:  # noqa: BLE001 - a variant that fails is a row saying so
                traceback.print_exc()
                rows[key] = {"error": repr(e)[:300]}
    for threads in THREADS:
        for round_ in range(ROUNDS):
            ms = _timing.interleaved_ms(models, case.unseen[:8], runs=None, repeats=5, warmup=3, threads=threads)
            speed = {k: round(ms["fp32"] / v, 3) for k, v in ms.items()}
            print("TIME", threads, round_, {k: round(v, 3) for k, v in ms.items()}, speed, flush=True)
            for k in ms:
                rows.setdefault(k, {}).setdefault(f"speedup_{threads}t", []).append(speed[k])
                rows[k].setdefault(f"ms_{threads}t", []).append(round(ms[k], 3))
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1, default=str)


if __name__ == "__main__":
    main()
