"""int8 inside If/Loop/Scan bodies (issue 13, item 1): fp32 vs static int8 on models whose compute
sits in subgraphs.

    .venv/bin/python bench/subgraphs.py [--repeats 7] [--out docs/subgraphs.md]

Three models made in code (ONNX text, seeded weights):

* ``if_frontend``: a voice detector's front-end chosen by an If on the sample rate ``sr`` (16000 or
  8000): each branch 4 Conv layers (1 -> 32 -> 64 (stride 2) -> 64 -> 32 channels, 3x3, Relu) on a
  (1, 1, 64, 64) input, then GlobalAveragePool and a Gemm head in the main graph;
* ``loop_rnn``: a Loop of 16 steps, h = tanh(relu(h M1) M2 + b), hidden 256;
* ``scan_rnn``: a Scan over 32 steps, h = tanh(x_t Wx + h Wh), hidden 256 (its MatMuls sit between
  float ops: dynamic int8, select.py rule 5);
* ``vad (zoo)``: ``edgeq.zoo.vad_graph`` (a Silero-style detector: an If on the sample rate, each
  branch a filterbank Conv -> log -> Conv -> LSTM -> head), calibrated on 32 chunks per rate;
  its filterbank Conv stays float (select.py rule 13: it feeds a Log).

Before issue 13 every node of these bodies stayed float: the int8 model was the fp32 one.
Latency: one session per model (onnxruntime CPU, 1 intra-op thread, sequential), 3 warm-up runs,
then ``--repeats`` interleaved rounds of about 0.2 s each on one held-out input; the median per
inference. Fidelity: SQNR vs fp32 over all held-out inputs (both sample rates for the If).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from _timing import interleaved_ms, session  # noqa: E402

Feeds = list[dict[str, np.ndarray]]

_BRANCH = """{name} () => (float[1,32,32,32] {p}_out) {{
      {p}1 = Conv<pads=[1,1,1,1]>(x, {P}W1, {P}B1)
      {p}r1 = Relu({p}1)
      {p}2 = Conv<pads=[1,1,1,1], strides=[2,2]>({p}r1, {P}W2, {P}B2)
      {p}r2 = Relu({p}2)
      {p}3 = Conv<pads=[1,1,1,1]>({p}r2, {P}W3, {P}B3)
      {p}r3 = Relu({p}3)
      {p}4 = Conv<pads=[1,1,1,1]>({p}r3, {P}W4, {P}B4)
      {p}_out = Relu({p}4)
    }}"""

IF_TEXT = """<ir_version: 8, opset_import: ["" : 17]>
if_frontend (float[1,1,64,64] x, int64 sr) => (float[1,2] y) {
  rate = Constant<value = int64 {16000}>()
  wide = Equal(sr, rate)
  f = If(wide) <then_branch = THEN, else_branch = ELSE>
  g = GlobalAveragePool(f)
  v = Flatten(g)
  y = Gemm<transB=1>(v, HW, HB)
}""".replace("THEN", _BRANCH.format(name="at16k", p="t", P="T")).replace("ELSE", _BRANCH.format(name="at8k", p="e", P="E"))

LOOP_TEXT = """<ir_version: 8, opset_import: ["" : 17]>
loop_rnn (float[1,256] x) => (float[1,256] h) {
  steps = Constant<value = int64 {16}>()
  go = Constant<value = bool {1}>()
  h = Loop(steps, go, x) <
    body = step (int64 i, bool c_in, float[1,256] h_in) => (bool c_out, float[1,256] h_out) {
      c_out = Identity(c_in)
      a = MatMul(h_in, M1)
      r = Relu(a)
      m = MatMul(r, M2)
      z = Add(m, MB)
      h_out = Tanh(z)
    }
  >
}"""

SCAN_TEXT = """<ir_version: 8, opset_import: ["" : 17]>
scan_rnn (float[1,256] h0, float[32,1,256] seq) => (float[1,256] h, float[32,1,256] ys) {
  h, ys = Scan(h0, seq) <
    num_scan_inputs = 1,
    body = step (float[1,256] h_in, float[1,256] x_t) => (float[1,256] h_out, float[1,256] y_t) {
      a = MatMul(x_t, WX)
      b = MatMul(h_in, WH)
      s = Add(a, b)
      h_out = Tanh(s)
      y_t = Identity(h_out)
    }
  >
}"""


def _build(text: str, weights: dict[str, np.ndarray]) -> bytes:
    import onnx

    model = onnx.parser.parse_model(text)
    for name, array in weights.items():
        model.graph.initializer.append(onnx.numpy_helper.from_array(array.astype(np.float32), name))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _he(rng, *shape) -> np.ndarray:
    return rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))


def cases(calib: int, held_out: int) -> list[tuple[str, bytes, Feeds, Feeds]]:
    rng = np.random.default_rng(0)
    weights = {"HW": _he(rng, 2, 32), "HB": np.zeros(2)}
    for p in "TE":
        for i, (co, ci) in enumerate([(32, 1), (64, 32), (64, 64), (32, 64)], 1):
            weights[f"{p}W{i}"], weights[f"{p}B{i}"] = _he(rng, co, ci, 3, 3), rng.standard_normal(co) * 0.1

    def if_feeds(n: int, seed: int) -> Feeds:
        g = np.random.default_rng(seed)
        return [{"x": g.standard_normal((1, 1, 64, 64)).astype(np.float32),
                 "sr": np.array((16000, 8000)[i % 2], np.int64)} for i in range(n)]

    def loop_feeds(n: int, seed: int) -> Feeds:
        g = np.random.default_rng(seed)
        return [{"x": g.standard_normal((1, 256)).astype(np.float32)} for _ in range(n)]

    def scan_feeds(n: int, seed: int) -> Feeds:
        g = np.random.default_rng(seed)
        return [{"h0": np.zeros((1, 256), np.float32), "seq": g.standard_normal((32, 1, 256)).astype(np.float32)}
                for _ in range(n)]

    loop = {"M1": rng.standard_normal((256, 256)) / 16, "M2": rng.standard_normal((256, 256)) / 16,
            "MB": rng.standard_normal(256) * 0.1}
    scan = {"WX": rng.standard_normal((256, 256)) / 16, "WH": rng.standard_normal((256, 256)) / 16}
    return [("if_frontend", _build(IF_TEXT, weights), if_feeds(calib, 0), if_feeds(held_out, 100)),
            ("loop_rnn", _build(LOOP_TEXT, loop), loop_feeds(calib, 0), loop_feeds(held_out, 100)),
            ("scan_rnn", _build(SCAN_TEXT, scan), scan_feeds(calib, 0), scan_feeds(held_out, 100)), *_vad()]


def _vad() -> list[tuple[str, bytes, Feeds, Feeds]]:
    """The zoo voice detector (an If on the sample rate, LSTM in both branches), where installed:
    32 calibration and 100 held-out chunks per rate, interleaved."""
    try:
        from edgeq.zoo import vad_data, vad_graph
    except ImportError:
        return []

    def both(make, n: int) -> Feeds:
        return [f for pair in zip(make(n, sr=16000), make(n, sr=8000)) for f in pair]

    return [("vad (zoo)", vad_graph.build_model().SerializeToString(), both(vad_data.calibration_data, 32),
             both(vad_data.eval_data, 100))]


def run_case(name: str, data: bytes, calib: Feeds, held_out: Feeds, repeats: int) -> dict:
    import onnx
    import onnx_ir as ir

    import edgeq
    from edgeq.metrics import sqnr_db

    result = edgeq.quantize(onnx.load_from_string(data), edgeq.QuantConfig(mode="static"), calib, progress=False)
    models = {"fp32": data, "int8": ir.to_proto(result.model).SerializeToString()}
    outs = {k: [session(m).run(None, f) for f in held_out] for k, m in models.items()}
    sqnr = min(sqnr_db(np.concatenate([r[i].ravel() for r in outs["fp32"]]),
                       np.concatenate([g[i].ravel() for g in outs["int8"]])) for i in range(len(outs["fp32"][0])))
    inner = [e for e in result.report["quantized"] if e["role"] in ("compute", "dynamic")]  # int8 kernels
    return {"name": name, "ms": interleaved_ms(models, held_out, runs=None, repeats=repeats, warmup=min(3, len(held_out))), "sqnr": sqnr,
            "kernels": ", ".join(sorted({f"{e['op']} ({e['role']})" for e in inner})),
            "bytes": {k: len(v) for k, v in models.items()}}


def to_markdown(rows: list[dict], command: str, wall_s: float) -> str:
    lines = [
        f"Measured by `{command}` ({wall_s:.0f} s): onnxruntime CPU, 1 intra-op thread, median ms per",
        "inference over interleaved rounds (the If model alternating 16 kHz and 8 kHz inputs). int8 is",
        "`edgeq.quantize(model, QuantConfig(mode=\"static\"), calib)`; before issue 13 it equalled fp32.",
        "",
        "| model | fp32 ms | int8 ms | speed-up | SQNR dB | int8 nodes | size KB (fp32 / int8) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ms, size = row["ms"], row["bytes"]
        lines.append(f"| {row['name']} | {ms['fp32']:.3f} | {ms['int8']:.3f} | {ms['fp32'] / ms['int8']:.2f}x | "
                     f"{row['sqnr']:.1f} | {row['kernels']} | {size['fp32'] / 1e3:.0f} / {size['int8'] / 1e3:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=8, help="calibration inputs per model")
    parser.add_argument("--eval", type=int, default=8, help="held-out inputs per model")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--out", default=None, help="write the Markdown table here")
    args = parser.parse_args(argv)
    command = ("bench/subgraphs.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    start = time.perf_counter()
    rows = []
    for name, data, calib, held_out in cases(args.calib, args.eval):
        rows.append(run_case(name, data, calib, held_out, args.repeats))
        print(f"{name}: {rows[-1]}", flush=True)
    text = to_markdown(rows, command, time.perf_counter() - start)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
