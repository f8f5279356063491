"""QAT at W8A8 against static PTQ on another machine's CPU, from a bundle made here (issue 16).

    # here: the zoo model (float weights stored as float16, to travel), its training and evaluation feeds
    .venv/bin/python bench/qat_bundle.py --make-bundle out/kq --models minilm [--samples 1024 --eval 96]
    # there (edgeq's dependencies and torch; not the zoo's packages)
    python3 bench/qat_bundle.py --bundle BUNDLE --models minilm [--epochs 3]

Per model: the CPU's facts (does onnxruntime saturate products of 8-bit weights), edgeq's static
PTQ W8A8 with default options (its weight width is this CPU's choice: ``stages/weight_bits.py``),
then ``distill`` (the recipe of ``edgeq qat``) at W8A8: the untrained module exported (PTQ on QAT's
grid) and QAT, each judged on the evaluation split by the min output SQNR against the fp32 model,
on onnxruntime's kernels and in the file's exact arithmetic (``passes/integer_as_float.py``, QDQ
fusion off). The fp32 model is the bundle's, its weights cast back from float16: PTQ and QAT are
judged against the same one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def make_bundle(name: str, folder: str, samples: int, eval_samples: int) -> None:
    import onnx
    from realworld import _save_coded

    from edgeq import zoo
    from edgeq.exporter import export

    spec = zoo.get(name)
    out = os.path.join(folder, name)
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        export(name, os.path.join(tmp, "fp32.onnx"))
        proto = onnx.load(os.path.join(tmp, "fp32.onnx"))
    for init in proto.graph.initializer:  # float16 to travel; cast back on arrival
        if init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init).astype(np.float16), init.name))
    onnx.save(proto, os.path.join(out, "model16.onnx"))
    _save_coded(os.path.join(out, "train.npz"), list(spec.calibration_data(samples, seed=0)))
    _save_coded(os.path.join(out, "eval.npz"), list(spec.eval_data(eval_samples)))
    with open(os.path.join(out, "case.json"), "w", encoding="utf-8") as f:
        json.dump({"classification": spec.task == "classification"}, f)


def _fp32(folder: str, path: str) -> None:
    import onnx

    proto = onnx.load(os.path.join(folder, "model16.onnx"))
    for init in proto.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT16:
            init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init).astype(np.float32), init.name))
    onnx.save(proto, path)


def _scores(path: str, feeds, reference) -> tuple[float, float]:
    """Min output SQNR on onnxruntime's kernels, and in the file's exact arithmetic."""
    import onnx_ir as ir
    import onnxruntime as ort

    from edgeq.io import model_bytes
    from edgeq.passes.integer_as_float import IntegerAsFloatPass
    from edgeq.qat.zoo_recipe import _run, score

    kernels = score(_run(path, feeds), reference, None, False)["sqnr_db"]
    model = ir.load(path)
    IntegerAsFloatPass()(model)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(model_bytes(model), options, providers=["CPUExecutionProvider"])
    exact = score([session.run(None, f) for f in feeds], reference, None, False)["sqnr_db"]
    return kernels, exact


def run_bundle(name: str, folder: str, epochs: int) -> list[dict]:
    from realworld import _load_coded

    import edgeq
    from edgeq.config import QuantConfig
    from edgeq.qat import QATConfig
    from edgeq.qat.zoo_recipe import _run, distill
    from edgeq.runtime.cpu import int8_saturates

    base = os.path.join(folder, name)
    with open(os.path.join(base, "case.json"), encoding="utf-8") as f:
        meta = json.load(f)
    train, unseen = _load_coded(os.path.join(base, "train.npz")), _load_coded(os.path.join(base, "eval.npz"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "fp32.onnx")
        _fp32(base, src)
        reference = _run(src, unseen)
        static = os.path.join(tmp, "static.onnx")
        result = edgeq.quantize(src, QuantConfig(mode="static"), train[:32], progress=False)
        result.save(static)
        width = next((n.split(":")[1].split(",")[0].strip() for n in result.report.get("notes", [])
                      if n.startswith("weights of u8s8 kernels")), "8 bits (this CPU does not saturate)"
                     if not int8_saturates() else "7 bits")
        rows.append({"model": name, "variant": "edgeq PTQ static W8A8", "weights": width,
                     **dict(zip(("kernels_db", "exact_db"), _scores(static, unseen, reference)))})
        ptq, qat = os.path.join(tmp, "ptq.onnx"), os.path.join(tmp, "qat.onnx")
        began = time.perf_counter()
        summary = distill(src, train, unseen, qat, classification=meta["classification"], epochs=epochs,
                          config=QATConfig(weight_bits=8), ptq_out=ptq, progress=False)
        seconds = time.perf_counter() - began
        for label, path in (("PTQ on QAT's grid W8A8 (untrained)", ptq), ("QAT W8A8", qat)):
            rows.append({"model": name, "variant": label,
                         **dict(zip(("kernels_db", "exact_db"), _scores(path, unseen, reference)))})
        rows[-1].update(validation=summary["validation_sqnr_db"], best_epoch=summary["best_epoch"],
                        gain_check=summary.get("gain_check"),
                        seconds=round(seconds, 1), check=summary["export_check"]["within_one_step"])
    return rows


def main() -> int:
    from edgeq.runtime.cpu import int8_saturates

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="minilm")
    parser.add_argument("--make-bundle", default=None, metavar="DIR")
    parser.add_argument("--bundle", default=None, metavar="DIR")
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--eval", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    names = args.models.split(",")
    if args.make_bundle:
        for name in names:
            make_bundle(name, args.make_bundle, args.samples, args.eval)
        return 0
    if not args.bundle:
        parser.error("give --make-bundle DIR or --bundle DIR")
    import onnxruntime as ort

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, onnxruntime {ort.__version__}, "
          f"8-bit weight products saturate: {int8_saturates()}")
    print("| model | variant | dB vs fp32, onnxruntime's kernels | dB, the file's exact arithmetic | notes |")
    print("|---|---|---|---|---|")
    for name in names:
        for row in run_bundle(name, args.bundle, args.epochs):
            notes = row.get("weights") or (f"validation by epoch {row['validation']}, kept {row['best_epoch']} "
                                           f"(gain check {row['gain_check']}), {row['seconds']} s, export check "
                                           f"{row['check']}" if "validation" in row else "")
            print(f"| {row['model']} | {row['variant']} | {row['kernels_db']} | {row['exact_db']} | {notes} |", flush=True)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
