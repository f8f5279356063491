"""Time and peak memory of ``edgeq prepare`` vs onnxruntime's ``quant_pre_process``.

The model: a Paddle-style conv net (opset 11, every weight a Constant node, Conv-BN-Relu
blocks), built in code. Each tool runs in a fresh subprocess (load, process, save); the figure
is the median of ``--runs`` runs: wall seconds and the child's peak RSS.

    .venv/bin/python bench/prepare_vs_ort.py [--blocks 24] [--channels 256] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

EDGEQ = """
import sys
from edgeq.io import load_model, save_model
from edgeq.prepare import prepare_model
model, _ = prepare_model(load_model(sys.argv[1]))
save_model(model, sys.argv[2], inputs=[sys.argv[1]])
"""
ORT = """
import sys
from onnxruntime.quantization.shape_inference import quant_pre_process
quant_pre_process(sys.argv[1], sys.argv[2])
"""


def build(blocks: int, channels: int, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, x = [], "image"

    def const(name, array):
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array.astype(np.float32), name)))
        return name

    cin = 3
    for i in range(blocks):
        w = const(f"conv2d_{i}.w_0", rng.standard_normal((channels, cin, 3, 3)) * np.sqrt(2 / (cin * 9)))
        nodes.append(helper.make_node("Conv", [x, w], [f"c{i}"], pads=[1, 1, 1, 1]))
        params = [const(f"bn_{i}.{k}", a) for k, a in zip("sbmv", (rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.1, channels),
                                                                    rng.normal(0, 0.2, channels), rng.uniform(0.5, 2, channels)))]
        nodes.append(helper.make_node("BatchNormalization", [f"c{i}", *params], [f"b{i}"]))
        nodes.append(helper.make_node("Relu", [f"b{i}"], [f"r{i}"]))
        x, cin = f"r{i}", channels
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["y"]))
    graph = helper.make_graph(nodes, "paddle_deep", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, 1, 1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=6)


def run(script: str, src: str, dst: str) -> tuple[float, float, str]:
    """(seconds, peak RSS MiB of this process's children so far, error) of one fresh subprocess.

    Each tool runs under its own parent process (see main), so the children's peak belongs
    to that tool alone."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script, src, dst], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    error = "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["failed"])[-1][:120]
    return seconds, peak / 1024, error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=24)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tool", choices=["edgeq", "ort"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tool is None:  # one child per tool so that RUSAGE_CHILDREN is per tool
        for tool in ("edgeq", "ort"):
            subprocess.run([sys.executable, __file__, "--tool", tool, "--blocks", str(args.blocks),
                            "--channels", str(args.channels), "--runs", str(args.runs)], check=True)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "model.onnx")
        onnx.save(build(args.blocks, args.channels), src)
        size = os.path.getsize(src) / 2**20
        script = EDGEQ if args.tool == "edgeq" else ORT
        results = [run(script, src, os.path.join(tmp, f"out{i}.onnx")) for i in range(args.runs)]
        seconds = statistics.median(r[0] for r in results)
        peak = max(r[1] for r in results)
        error = next((r[2] for r in results if r[2]), "")
        out = os.path.join(tmp, "out0.onnx")
        ops = sorted({n.op_type for n in onnx.load(out).graph.node}) if os.path.exists(out) else []
        label = "edgeq prepare" if args.tool == "edgeq" else "ORT quant_pre_process"
        print(f"{label}: model {size:.0f} MiB ({args.blocks} blocks x {args.channels} ch), median {seconds:.2f} s "
              f"over {args.runs} runs, peak RSS {peak:.0f} MiB, ops after: {ops} {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
