"""QAT at W8A8: the float parameters' learning rate, before (1e-4) and the default (issue 16).

    .venv/bin/python bench/qat_float_lr.py [--models vad,digits_resnet,digits_mobilenet,kws,textdet,tiny_transformer]
        [--lrs 1e-4,default] [--epochs 3] [--samples 1024] [--eval 200]

Per zoo model: ``edgeq.qat`` distillation at 8-bit weights (``qat_zoo``: trained on the model's
calibration source, a tenth of it held out to pick the epoch, judged on its evaluation split,
which training never sees), once per learning rate of the float parameters (biases, layers left
float; ``fit``'s ``lr``); "default" is ``fit``'s own choice for the model. Columns: min output
SQNR vs fp32 on the evaluation split, PTQ's (the untrained module exported) beside it, the
validation SQNR per epoch (0: untrained) and the epoch kept.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> int:
    from edgeq.qat.config import QATConfig
    from edgeq.qat.zoo_recipe import qat_zoo

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="vad,digits_resnet,digits_mobilenet,kws,textdet,tiny_transformer")
    parser.add_argument("--lrs", default="1e-4,default")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--workdir", default="out/bench/qat_float_lr")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    print("| model | float lr | PTQ W8A8 dB | QAT W8A8 dB | validation dB by epoch (0: untrained) | kept | s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for lr in args.lrs.split(","):
            began = time.perf_counter()
            r = qat_zoo(name, os.path.join(args.workdir, f"{name}.onnx"), samples=args.samples, eval_samples=args.eval,
                        epochs=args.epochs, config=QATConfig(weight_bits=8),
                        progress=False, **({} if lr == "default" else {"lr": float(lr)}))
            print(f"| {name} | {lr} | {r['ptq']['sqnr_db']} | {r['qat']['sqnr_db']} | "
                  f"{', '.join(str(v) for v in r['validation_sqnr_db'])} | {r['best_epoch']} | "
                  f"{time.perf_counter() - began:.0f} |", flush=True)
            print(json.dumps({"model": name, "lr": lr, "ptq": r["ptq"], "qat": r["qat"], "gain_check": r.get("gain_check")}),
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
