"""QAT training time with and without mixed precision on one device (issue 16: amp on CUDA).

    python bench/qat_amp.py [--models digits_resnet,resnet224] [--device cuda] [--epochs 3] [--samples 1024]
                            [--batch 32] [--quantizers fused,formula]

Per zoo model: ``edgeq.qat.zoo_recipe.qat_zoo`` (distilled from the fp32 model's outputs, W8A8,
the exported model checked against torch) with ``amp`` none, bf16 and fp16 (fp16 with a
GradScaler) on ``--device``: training seconds (``fit``'s own clock, all epochs) and the exported
model's top-1 agreement with fp32 and min output SQNR on the zoo's evaluation inputs (onnxruntime,
CPU). One process, the runs one after another; a first short run warms the device up.
``--quantizers``: the fake quantizers as they are (``fused``, fake_quant.py (5)) and/or written out
elementwise as before (``formula``), each with every ``--amp``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    from edgeq.exporter import export
    from edgeq.qat.zoo_recipe import qat_zoo

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="digits_resnet,resnet224")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--amp", default="none,bf16,fp16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--quantizers", default="fused")
    args = parser.parse_args()
    from edgeq.qat import fake_quant

    print(f"| model | device | quantizers | amp | train s ({args.epochs} epochs, {args.samples} inputs, batch {args.batch}) | "
          "vs no amp | top-1 agreement | SQNR dB |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            fp32 = os.path.join(tmp, f"{name}.fp32.onnx")
            export(name, fp32)
            qat_zoo(name, os.path.join(tmp, "warm.onnx"), samples=max(64, 2 * args.batch), eval_samples=8, epochs=1,
                    device=args.device, batch=args.batch, progress=False, fp32_path=fp32)  # the device warmed up
            for kind in args.quantizers.split(","):
                fake_quant.FUSED = kind == "fused"
                base = None
                for amp in args.amp.split(","):
                    s = qat_zoo(name, os.path.join(tmp, f"{name}.{kind}.{amp}.onnx"), samples=args.samples,
                                eval_samples=args.eval, epochs=args.epochs, device=args.device, batch=args.batch,
                                amp=None if amp == "none" else amp, progress=False, fp32_path=fp32)
                    base = base or s["train_seconds"]
                    q = s["qat"]
                    print(f"| {name} | {args.device} | {kind} | {amp} | {s['train_seconds']:.1f} | "
                          f"{base / s['train_seconds']:.2f}x | {q.get('argmax_agreement', '-')} | {q['sqnr_db']} |", flush=True)


if __name__ == "__main__":
    main()
