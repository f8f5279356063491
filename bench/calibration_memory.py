"""Peak memory and time of calibration: edgeq vs onnxruntime.quantization's calibrators.

    .venv/bin/python bench/calibration_memory.py --samples 8 32 64 --repeats 3 --write docs/calibration.md

The feeds (batch 1, 3x224x224, deterministic) are written as .npz files first; every run is a
fresh subprocess (peak RSS is per process) that reads them one file at a time, calibrates every float tensor of the model (the graph input
and every node output, as ORT does with ``op_types_to_calibrate=None``), and reports the peak
RSS of the process (``VmHWM``), the RSS just before calibrating, and the calibration's wall and
CPU time (CPU time, all threads, is the steadier figure on a shared machine).
Figures are medians over ``--repeats`` runs.

The model is ``edgeq.zoo.get("mobilenet224")`` exported to ONNX with its sample photos as data
when the zoo has it (needs torch), else (or with ``--no-zoo``) an in-code MobileNetV2 (width 1.0, 224x224, ReLU6, residual adds, random He-initialized weights,
BatchNorm folded) built with ``onnx.helper``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

EDGEQ_METHODS = ("minmax", "percentile", "entropy", "mse")
ORT_METHODS = ("MinMax", "Percentile", "Entropy")
MARK_BEGIN = "<!-- bench:calibration_memory:begin -->"
MARK_END = "<!-- bench:calibration_memory:end -->"


# -- the model ---------------------------------------------------------------------------------



def peak_rss_mb() -> float:
    """Peak RSS of this process since exec (VmHWM). ru_maxrss would also count the parent's RSS
    at fork time, which hides the child's own peak when the parent is larger."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def mobilenet_v2(size: int = 224, seed: int = 0):
    """An ONNX MobileNetV2 (BN folded) with random weights, input ``x[N,3,size,size]``."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    counter = [0]

    def conv(x, cin, cout, k, stride=1, groups=1, act=True):
        i = counter[0]
        counter[0] += 1
        fan_in = cin // groups * k * k
        w = (rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.05).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")])
        pad = k // 2
        nodes.append(
            helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"conv{i}"], strides=[stride, stride],
                             pads=[pad] * 4, group=groups)
        )
        if not act:
            return f"conv{i}"
        nodes.append(helper.make_node("Clip", [f"conv{i}", "zero", "six"], [f"relu6_{i}"]))
        return f"relu6_{i}"

    inits += [numpy_helper.from_array(np.array(0.0, np.float32), "zero"), numpy_helper.from_array(np.array(6.0, np.float32), "six")]
    x = conv("x", 3, 32, 3, 2)
    cin = 32
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    block = 0
    for t, c, n, s in settings:
        for r in range(n):
            stride = s if r == 0 else 1
            hidden = cin * t
            y = x if t == 1 else conv(x, cin, hidden, 1)
            y = conv(y, hidden, hidden, 3, stride, groups=hidden)
            y = conv(y, hidden, c, 1, act=False)
            if stride == 1 and cin == c:
                nodes.append(helper.make_node("Add", [x, y], [f"add{block}"]))
                y = f"add{block}"
            x, cin = y, c
            block += 1
    x = conv(x, cin, 1280, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"]))
    fc = (rng.standard_normal((1000, 1280)) * np.sqrt(1.0 / 1280)).astype(np.float32)
    inits += [numpy_helper.from_array(fc, "fc_w"), numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes, "mobilenet_v2",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 1000])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def build_model(path: str, size: int, use_zoo: bool = True) -> tuple[str, str]:
    """Write the benchmark model to ``path``; return ``(label, data)`` where data is "zoo" (the
    zoo's sample photos, one per seed) or "random" (N(0, 1) images)."""
    import onnx

    if use_zoo:
        try:
            import torch

            from edgeq import zoo

            spec = zoo.get("mobilenet224")
            torch.onnx.export(spec.build(), spec.example_inputs(), path, input_names=list(spec.input_names),
                              output_names=list(spec.output_names), dynamic_axes=spec.dynamic_axes,
                              dynamo=False, opset_version=17)
            return "edgeq.zoo mobilenet224 (MobileNetV2 1.0, torch.onnx.export, opset 17)", "zoo"
        except Exception as e:  # the zoo is not there yet: fall back to the in-code net
            print(f"zoo mobilenet224 unavailable ({type(e).__name__}: {e}); using the in-code MobileNetV2")
    onnx.save(mobilenet_v2(size), path)
    return f"in-code MobileNetV2 {size}x{size} (random weights)", "random"


# -- one run (in a subprocess) -----------------------------------------------------------------


def write_data(folder: str, num: int, size: int, data: str, input_name: str) -> None:
    """``num`` feeds as .npz files (zoo sample photos, or N(0, 1) images), made in the parent."""
    os.makedirs(folder, exist_ok=True)
    if data == "zoo":
        from edgeq import zoo

        feeds = zoo.get("mobilenet224").calibration_data(num)
    else:
        rng = np.random.default_rng(123)
        feeds = [{input_name: rng.standard_normal((1, 3, size, size)).astype(np.float32)} for _ in range(num)]
    for i, feed in enumerate(feeds):
        np.savez(os.path.join(folder, f"{i:04d}.npz"), **feed)


def _feeds(folder: str, num: int):
    """The first ``num`` feeds, read one file at a time (nothing is held)."""
    for name in sorted(os.listdir(folder))[:num]:
        with np.load(os.path.join(folder, name), allow_pickle=False) as f:
            yield {k: f[k] for k in f.files}


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def worker(tool: str, method: str, num: int, model_path: str, data: str) -> dict:
    import onnx

    model = onnx.load(model_path)
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits] + [out for node in model.graph.node for out in node.output if out]
    if tool == "edgeq":
        from edgeq.calibrate import collect_ranges, load_data
        from edgeq.config import QuantConfig

        config = QuantConfig(method=method)
        before = _rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        table = collect_ranges(model, names, load_data(_feeds(data, num), model), config, progress=False)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        tensors = len(table)
    else:
        from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = _feeds(data, num)

            def get_next(self):
                return next(self.it, None)

        del model
        before = _rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        with tempfile.TemporaryDirectory() as tmp:
            calibrator = create_calibrator(model_path, None, os.path.join(tmp, "augmented.onnx"),
                                           calibrate_method=getattr(CalibrationMethod, method))
            calibrator.collect_data(Reader())
            ranges = calibrator.compute_data()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        tensors = len(ranges.data)
    peak = peak_rss_mb()
    return {"peak_mb": peak, "before_mb": before, "seconds": seconds, "cpu_seconds": cpu, "tensors": tensors}


# -- the driver --------------------------------------------------------------------------------


def run_one(tool: str, method: str, num: int, model_path: str, data: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", tool, method, str(num), model_path, "--data", data],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{tool} {method} {num}: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--tools", nargs="+", default=["edgeq", "ort"])
    parser.add_argument("--write", help="markdown file to update between the bench markers")
    parser.add_argument("--no-zoo", action="store_true", help="use the in-code MobileNetV2 and random data")
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=4, metavar=("TOOL", "METHOD", "N", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        tool, method, num, model_path = args.worker
        print(json.dumps(worker(tool, method, int(num), model_path, args.data)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        model_path = os.path.join(tmp, "model.onnx")
        label, kind = build_model(model_path, args.size, not args.no_zoo)
        import onnx

        proto = onnx.load(model_path)
        inits = {i.name for i in proto.graph.initializer}
        input_name = next(i.name for i in proto.graph.input if i.name not in inits)
        del proto
        data = os.path.join(tmp, "data")
        write_data(data, max(args.samples), args.size, kind, input_name)
        print(f"model: {label}", flush=True)
        rows = []
        for num in args.samples:
            for tool in args.tools:
                for method in EDGEQ_METHODS if tool == "edgeq" else ORT_METHODS:
                    runs = [run_one(tool, method, num, model_path, data) for _ in range(args.repeats)]
                    row = {
                        "tool": "edgeq" if tool == "edgeq" else "onnxruntime",
                        "method": method.lower(),
                        "samples": num,
                        "peak_mb": statistics.median(r["peak_mb"] for r in runs),
                        "delta_mb": statistics.median(r["peak_mb"] - r["before_mb"] for r in runs),
                        "seconds": statistics.median(r["seconds"] for r in runs),
                        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
                        "tensors": runs[0]["tensors"],
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    command = "python bench/calibration_memory.py " + " ".join(
        a for a in sys.argv[1:] if a != "--write" and a != args.write
    )
    table = render(rows, label, command.strip(), args.repeats)
    print(table)
    if args.write:
        write_section(args.write, table)


def render(rows: list[dict], label: str, command: str, repeats: int) -> str:
    lines = [
        MARK_BEGIN,
        f"Model: {label}; batch 1 per sample; medians of {repeats} runs, one subprocess each.",
        f"Command: `{command}`",
        "",
        "| samples | tool | method | tensors | peak RSS (MB) | peak - RSS before calibrating (MB) | wall (s) | CPU (s) |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['samples']} | {r['tool']} | {r['method']} | {r['tensors']} | {r['peak_mb']:.0f} | "
            f"{r['delta_mb']:.0f} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} |"
        )
    lines.append(MARK_END)
    return "\n".join(lines)


def write_section(path: str, table: str) -> None:
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + table + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + table + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
