"""Recurrent cells with int8 weights (issue 13): LSTM as DynamicQuantizeLSTM against fp32.

    .venv/bin/python bench/recurrent.py [--repeats 7] [--out docs/recurrent.md]

For (a) the corpus ``lstm_model`` (tests/corpus/builders.py; hidden 16 as in the corpus and 64), (b) single LSTMs made in code
(input 64, hidden 128 and 256, sequence 50 and 200, batch 1) and (c) the OCR recognizer shipped
in the ``ddddocr`` wheel (``common.onnx``: convolutions, then a bidirectional LSTM of hidden 512;
its file read from the installed package, none of its code imported; inputs are rendered text
lines, made as bench/generalization.py makes them), three models in one process:

* fp32, the original;
* static int8 with the LSTM int8 (``edgeq.quantize(model, QuantConfig(mode="static"), calib)``:
  the LSTM becomes com.microsoft.DynamicQuantizeLSTM);
* static int8 with the LSTM float (``QuantConfig(mode="static", recurrent="float")``).

Latency: one session each (onnxruntime CPU, 1 intra-op thread, sequential), 3 warm-up runs,
then ``--repeats`` interleaved rounds of about 0.2 s of fp32 inferences (at most ``--runs``) on one
held-out input;
the median per inference. Fidelity: SQNR vs fp32 over all held-out inputs (all samples at
once, min over outputs); the OCR model adds the CTC argmax agreement per time step. Size:
the serialized model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from _timing import interleaved_ms, session  # noqa: E402

Feeds = list[dict[str, np.ndarray]]
VARIANTS = ("fp32", "LSTM int8", "LSTM float")


def code_lstm(features: int, hidden: int, steps: int, seed: int = 0):
    """One forward LSTM (with bias) over [steps, 1, features]; its Y and Y_h are the outputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((1, 4 * hidden, features)) / np.sqrt(features)).astype(np.float32), "W"),
             numpy_helper.from_array((rng.standard_normal((1, 4 * hidden, hidden)) / np.sqrt(hidden)).astype(np.float32), "R"),
             numpy_helper.from_array((rng.standard_normal((1, 8 * hidden)) * 0.1).astype(np.float32), "B")]
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y", "Y_h"], hidden_size=hidden, name="lstm")
    graph = helper.make_graph([node], "lstm", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [steps, 1, features])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [steps, 1, 1, hidden]),
                               helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, 1, hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)

    def feeds(n: int, seed: int) -> Feeds:
        g = np.random.default_rng(seed)
        return [{"X": g.standard_normal((steps, 1, features)).astype(np.float32)} for _ in range(n)]

    return model.SerializeToString(), feeds


def cases(calib: int, held_out: int) -> list[tuple[str, bytes, Feeds, Feeds]]:
    out = []
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
    from corpus.builders import lstm_model

    for hidden in (16, 64):  # 16: the corpus default
        model, feeds = lstm_model(hidden=hidden)
        out.append((f"corpus lstm_model (in 8, hidden {hidden}, 6/10 steps, batch 2)", model.SerializeToString(),
                    feeds(calib, 0), feeds(held_out, 100)))
    for hidden, steps in ((128, 50), (128, 200), (256, 50), (256, 200)):
        data, feeds = code_lstm(64, hidden, steps)
        out.append((f"LSTM in 64, hidden {hidden}, {steps} steps, batch 1", data, feeds(calib, 0), feeds(held_out, 100)))
    from generalization import real_model_path, text_lines

    with open(real_model_path("ddddocr_rec"), "rb") as f:
        out.append(("ddddocr common.onnx (conv + bidirectional LSTM 512)", f.read(), text_lines(calib, 0),
                    text_lines(held_out, 1)))
    return out


def variants(data: bytes, calib: Feeds) -> dict[str, tuple[bytes, dict]]:
    import onnx
    import onnx_ir as ir

    import edgeq

    out = {"fp32": (data, {})}
    for name, recurrent in (("LSTM int8", "int8"), ("LSTM float", "float")):
        config = edgeq.QuantConfig(mode="static", recurrent=recurrent)
        result = edgeq.quantize(onnx.load_from_string(data), config, calib, progress=False)
        out[name] = (ir.to_proto(result.model).SerializeToString(), result.report)
    return out


def fidelity(ref: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> float:
    from edgeq.metrics import sqnr_db

    return min(sqnr_db(np.concatenate([r[i].ravel() for r in ref]), np.concatenate([g[i].ravel() for g in got]))
               for i in range(len(ref[0])))


def run_case(name: str, data: bytes, calib: Feeds, held_out: Feeds, args) -> dict:
    built = variants(data, calib)
    models = {k: v[0] for k, v in built.items()}
    outs = {k: [session(m).run(None, f) for f in held_out] for k, m in models.items()}
    ref = outs["fp32"]
    runs = max(1, min(args.runs, int(0.2 / max(_one_run_s(models["fp32"], held_out[0]), 1e-6))))  # ~0.2 s a round
    times = interleaved_ms(models, [held_out[0]], runs=runs, repeats=args.repeats, warmup=3)
    row = {"name": name, "variants": {}}
    for k in VARIANTS:
        report = built[k][1]
        lstm = [e for e in report.get("quantized", []) if e["op"] == "LSTM"]
        row["variants"][k] = {"ms": times[k], "bytes": len(models[k]), "sqnr": None if k == "fp32" else fidelity(ref, outs[k]),
                              "lstm_int8": bool(lstm)}
        if "ddddocr" in name and k != "fp32":
            agree = np.mean(np.concatenate([(r[0].argmax(-1) == g[0].argmax(-1)).ravel() for r, g in zip(ref, outs[k])]))
            row["variants"][k]["ctc_agree"] = float(agree)
    return row


def _one_run_s(data: bytes, feed: dict) -> float:
    sess = session(data)
    sess.run(None, feed)
    start = time.perf_counter()
    sess.run(None, feed)
    return time.perf_counter() - start


def to_markdown(rows: list[dict], command: str, wall_s: float) -> str:
    lines = [
        "# Recurrent cells with int8 weights (LSTM)",
        "",
        "edgeq turns an ONNX `LSTM` with constant weights into onnxruntime's `com.microsoft.DynamicQuantizeLSTM`",
        "(`edgeq/passes/quantize_recurrent.py`, select.py rule 10): W and R stored int8, transposed to the",
        "kernel's `[directions, in, 4*hidden]`, symmetric with one scale per direction and gate column",
        "(zero points 0); X and the hidden state are quantized to uint8 by the kernel at run time, so nothing",
        "about the LSTM is calibrated. It applies in `--mode static` and `--mode dynamic` (and so in auto's",
        "variants) with `--format qdq`; `--recurrent float` (`QuantConfig(recurrent=\"float\")`) keeps LSTMs float.",
        "An LSTM with hidden_size < 64 stays float (quantize_recurrent.py (6)): the kernel quantizes the hidden",
        "state at every step, which costs more than its int8 GEMMs save there (hidden 32: up to 20% slower than",
        "fp32; 48: even; 64: 1.1x to 1.4x faster, 10 to 50 steps).",
        "",
        "GRU and RNN stay float (\"GRU has no int8 kernel in onnxruntime\"): onnxruntime has no quantized GRU",
        "contrib op, and no cheap rewrite gets one: the input projection cannot be taken out of a GRU node",
        "(it computes W*X itself), and an unrolled GRU needs a Loop/Scan over the sequence (a rewrite",
        "edgeq does not make; the MatMuls of such a body would be int8) or a fixed sequence length.",
        "",
        f"Measured by `{command}` ({wall_s:.0f} s): onnxruntime CPU, 1 intra-op thread, sessions in one",
        "process, interleaved rounds, median ms per inference on one held-out input. \"static, LSTM int8\" is",
        "`edgeq.quantize(model, QuantConfig(mode=\"static\"), calib)`; \"static, LSTM float\" adds",
        "`recurrent=\"float\"` (what edgeq did before). SQNR: vs fp32 over all held-out inputs, min over outputs.",
        "",
        "| model | fp32 ms | static, LSTM int8 ms | static, LSTM float ms | speed-up vs fp32 (LSTM int8 / float) "
        "| SQNR dB (LSTM int8 / float) | size MB (fp32 / int8 / float) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        v = row["variants"]
        fp, q, f = v["fp32"], v["LSTM int8"], v["LSTM float"]
        sq = f"{q['sqnr']:.1f} / {f['sqnr']:.1f}" if np.isfinite(f["sqnr"]) else f"{q['sqnr']:.1f} / inf (unchanged)"
        if "ctc_agree" in q:
            sq += f" (CTC argmax agreement {q['ctc_agree']:.4f} / {f['ctc_agree']:.4f})"
        name = row["name"] + ("" if q["lstm_int8"] else " (LSTM kept float: hidden < 64, quantize_recurrent.py (6))")
        lines.append(f"| {name} | {fp['ms']:.3f} | {q['ms']:.3f} | {f['ms']:.3f} | "
                     f"{fp['ms'] / q['ms']:.2f}x / {fp['ms'] / f['ms']:.2f}x | {sq} | "
                     f"{fp['bytes'] / 1e6:.2f} / {q['bytes'] / 1e6:.2f} / {f['bytes'] / 1e6:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=8, help="calibration inputs per model")
    parser.add_argument("--eval", type=int, default=16, help="held-out inputs per model")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--runs", type=int, default=5000, help="at most this many inferences per round")
    parser.add_argument("--out", default=None, help="write the Markdown table here (docs/recurrent.md)")
    args = parser.parse_args(argv)
    command = "bench/recurrent.py " + " ".join(argv if argv is not None else sys.argv[1:])
    start = time.perf_counter()
    rows = []
    for name, data, calib, held_out in cases(args.calib, args.eval):
        row = run_case(name, data, calib, held_out, args)
        rows.append(row)
        v = row["variants"]
        print(f"{name}: " + ", ".join(f"{k} {x['ms']:.3f} ms {x['bytes'] / 1e6:.2f} MB"
                                      + (f" {x['sqnr']:.1f} dB" if x["sqnr"] is not None else "") for k, x in v.items()),
              flush=True)
    text = to_markdown(rows, command.strip(), time.perf_counter() - start)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
