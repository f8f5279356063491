"""A model over 2 GB through edgeq and onnxruntime.quantization: wall time and peak memory per step.

    .venv/bin/python bench/large_model.py                    # 3 GiB (12 layers of 8192x8192 fp32)
    .venv/bin/python bench/large_model.py --layers 4 --quick # a smoke run (1 GiB)

The model (MatMul + Relu layers, weights scaled as trained ones are, in external data) is written
to --workdir; each step runs in a process of its own, from another working directory than the
model's folder, and its peak RSS (``ru_maxrss``) and wall time are read:

* edgeq: ``prepare``, ``quantize --calib`` (the default: auto mode, with its fallback to static
  mode above 1.5 GB of weights), ``run``, ``compare`` (fp32 vs int8, CPU provider);
* onnxruntime.quantization: ``quant_pre_process`` is skipped (it serializes the model whole),
  then ``quantize_static`` (QDQ, per-channel, MinMax, ``use_external_data_format=True``).

Prints a Markdown table (and writes it between the markers in --out, if it has them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 8192
BEGIN, END = "<!-- bench/large_model.py: begin -->", "<!-- bench/large_model.py: end -->"

PEAK = """
import resource, runpy, sys, time
start = time.perf_counter()
mode, *argv = sys.argv[1:]
code = 0
try:
    if mode == "edgeq":
        sys.argv = ["edgeq", *argv]
        runpy.run_module("edgeq", run_name="__main__")
    else:
        sys.argv = [mode, *argv]
        runpy.run_path(mode, run_name="__main__")
except SystemExit as e:
    code = e.code or 0
print("STEP", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, time.perf_counter() - start, file=sys.stderr)
sys.exit(code)
"""

ORT = """
import os
import sys
import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
src, out, cal = sys.argv[1:4]
feeds = [dict(np.load(os.path.join(cal, name))) for name in sorted(os.listdir(cal))]
class Reader(CalibrationDataReader):
    def __init__(self):
        self.it = iter(feeds)
    def get_next(self):
        return next(self.it, None)
quantize_static(src, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, use_external_data_format=True)
"""


def write_model(folder: str, layers: int) -> str:
    """Streamed one layer at a time into ``big.data`` (never the whole model in memory)."""
    import onnx
    import onnx.helper as oh

    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    inits, nodes, h, offset = [], [], "x", 0
    with open(os.path.join(folder, "big.data"), "wb") as f:
        for i in range(layers):
            w = rng.standard_normal((N, N), dtype=np.float32)
            w *= np.float32(np.sqrt(2.0 / N))
            f.write(w.tobytes())
            t = onnx.TensorProto(name=f"w{i}", data_type=onnx.TensorProto.FLOAT, dims=[N, N],
                                 data_location=onnx.TensorProto.EXTERNAL)
            for key, value in (("location", "big.data"), ("offset", str(offset)), ("length", str(w.nbytes))):
                t.external_data.add(key=key, value=value)
            offset += w.nbytes
            inits.append(t)
            nodes += [oh.make_node("MatMul", [h, f"w{i}"], [f"m{i}"], name=f"mm{i}"),
                      oh.make_node("Relu", [f"m{i}"], [f"h{i}"], name=f"relu{i}")]
            h = f"h{i}"
            del w
    graph = oh.make_graph(nodes, "big", [oh.make_tensor_value_info("x", 1, [1, N])],
                          [oh.make_tensor_value_info(h, 1, [1, N])], inits)
    path = os.path.join(folder, "big.onnx")
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    return path


def step(cwd: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PEAK, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT})
    tail = proc.stderr.rsplit("STEP", 1)
    if len(tail) < 2:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    peak, seconds = tail[1].split()[:2]
    out = {"peak_gib": int(peak) / 2**30, "seconds": float(seconds)}
    if proc.returncode:
        lines = [ln for ln in tail[0].strip().splitlines() if ln.strip()]
        out["error"] = lines[-1][:160] if lines else f"exit {proc.returncode}"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12, help="8192x8192 fp32 layers (256 MiB each; default 12: 3 GiB)")
    parser.add_argument("--calib", type=int, default=8)
    parser.add_argument("--workdir", default=None, help="default: a temporary folder (removed after)")
    parser.add_argument("--quick", action="store_true", help="skip onnxruntime.quantization")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgeq-large-") as tmp:
        work = args.workdir or tmp
        model = write_model(os.path.join(work, "m"), args.layers)
        size = os.path.getsize(os.path.join(work, "m", "big.data"))
        cal = os.path.join(work, "cal")
        os.makedirs(cal, exist_ok=True)
        rng = np.random.default_rng(1)
        for i in range(args.calib):
            np.savez(os.path.join(cal, f"{i}.npz"), x=rng.standard_normal((1, N)).astype(np.float32))
        run = os.path.join(work, "run")
        os.makedirs(run, exist_ok=True)
        rows = []
        t0 = time.perf_counter()
        rows.append(("edgeq prepare", step(run, "edgeq", "prepare", model, "-o", os.path.join(work, "p", "big.onnx"))))
        q = os.path.join(work, "q", "big.int8.onnx")
        rows.append(("edgeq quantize --calib (default)", step(run, "edgeq", "quantize", model, "-o", q, "--calib", cal, "-q")))
        rows.append(("edgeq run (int8)", step(run, "edgeq", "run", q, "--inputs", os.path.join(cal, "0.npz"))))
        rows.append(("edgeq compare fp32 vs int8", step(run, "edgeq", "compare", model, q, "--inputs",
                                                         os.path.join(cal, "0.npz"), "--iters", "10")))
        if not args.quick:
            script = os.path.join(work, "ort_quantize.py")
            with open(script, "w") as f:
                f.write(ORT)
            o = os.path.join(work, "ort", "big.int8.onnx")
            os.makedirs(os.path.dirname(o), exist_ok=True)
            rows.append(("onnxruntime quantize_static (QDQ, per-channel)", step(run, script, model, o, cal)))
        sizes = {}
        for label, path in (("edgeq", q), ("onnxruntime", os.path.join(work, "ort", "big.int8.onnx"))):
            if os.path.exists(path):
                folder = os.path.dirname(path)
                sizes[label] = sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))
        lines = [f"Model: {args.layers} MatMul+Relu layers of 8192x8192 fp32, {size / 2**30:.2f} GiB of weights in "
                 f"external data; {args.calib} calibration samples; each step a process of its own, run from "
                 "another folder than the model's. Peak memory is the process's peak RSS.", "",
                 "| step | wall time (s) | peak memory (GiB) | peak / model size | note |", "|---|---|---|---|---|"]
        for label, r in rows:
            if "peak_gib" not in r:
                lines.append(f"| {label} | | | | {r['error']} |")
                continue
            lines.append(f"| {label} | {r['seconds']:.1f} | {r['peak_gib']:.2f} | {r['peak_gib'] * 2**30 / size:.2f}x | "
                         f"{r.get('error', '')} |")
        lines.append("")
        lines.append("Output sizes (model + external data): " + ", ".join(
            f"{k} {v / 2**30:.2f} GiB ({v / size:.2f}x fp32)" for k, v in sizes.items()))
        lines.append(f"\nTotal wall time {time.perf_counter() - t0:.0f} s.")
        text = "\n".join(lines) + "\n"
        print(text)
        print(json.dumps(dict(rows)), file=sys.stderr)
    page = open(args.out, encoding="utf-8").read() if os.path.exists(args.out) else ""
    if BEGIN in page and END in page:
        page = page[: page.index(BEGIN) + len(BEGIN)] + "\n" + text + page[page.index(END):]
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
