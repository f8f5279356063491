"""Export every zoo model and print a Markdown table of export time and sizes (for docs/models.md).

    python bench/export_table.py [--repeat 3] [--only NAME ...] [--out-dir out/zoo]

Export time is the median over ``--repeat`` exports of the dynamo exporter call (tracing and
translation; the onnxruntime check is not counted). Sizes: parameters, the committed checkpoint
(digits only), and the fp32 ONNX file.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from edgeq import zoo
from edgeq.exporter import export

__all__ = ["main"]


def _row(name: str, out_dir: str, repeat: int) -> str:
    from edgeq.zoo import digits

    spec = zoo.get(name)
    params = sum(p.numel() for p in spec.build().parameters())
    times, result = [], None
    for _ in range(repeat):
        result = export(name, os.path.join(out_dir, f"{name}.onnx"))
        times.append(result.export_seconds)
    assert result is not None
    ckpt = digits.checkpoint_path(name)
    ckpt_kb = f"{os.path.getsize(ckpt) / 1024:.0f} KiB" if os.path.isfile(ckpt) else "-"
    return (f"| {name} | {params / 1e6:.2f} M | {ckpt_kb} | {result.size_bytes / 1e6:.2f} MB | "
            f"{statistics.median(times):.1f} s | {result.exporter} | {result.max_abs_error:.1e} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", action="append", choices=zoo.names())
    parser.add_argument("--out-dir", default=os.path.join("out", "zoo"))
    args = parser.parse_args(argv)
    import torch

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"<!-- {started}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, median of {args.repeat} -->")
    print("| model | params | checkpoint | ONNX fp32 | export time | exporter | max abs error vs torch |")
    print("|---|---|---|---|---|---|---|")
    for name in args.only or zoo.names():
        print(_row(name, args.out_dir, args.repeat), flush=True)


if __name__ == "__main__":
    main()
