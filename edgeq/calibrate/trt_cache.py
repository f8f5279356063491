"""TensorRT calibration cache: export (and read back) a ranges table in TensorRT's text format.

    TRT-8601-EntropyCalibration2
    input: 3c010a14
    conv1_out: 3d8f5c29

The first line names the TensorRT version (8601 = 8.6.1) and the calibrator; every other line is
``tensor name: scale`` with the scale as the hex of its float32 bits, big-endian.
``scale = max(|lo|, |hi|) / 127`` (int8, symmetric: TensorRT has no zero points). TensorRT reads
the file with ``IInt8Calibrator.readCalibrationCache`` (e.g. trtexec ``--calib=FILE``) and
matches names to the ONNX tensor names.
"""

from __future__ import annotations

import os
import struct

from edgeq.calibrate.ranges import RangesTable
from edgeq.errors import DataError, UsageError

__all__ = ["write_trt_cache", "read_trt_cache", "TRT_VERSION"]

TRT_VERSION = 8601
_QMAX = {"int8": 127.0}


def write_trt_cache(table: RangesTable, path: str | os.PathLike, quant_dtype: str = "int8", *, trt_version: int = TRT_VERSION) -> str:
    """Write ``table`` as a TensorRT calibration cache at ``path`` (atomically); return the path."""
    from edgeq.io import atomic_path

    if quant_dtype not in _QMAX:
        raise UsageError(f"TensorRT calibration caches hold {', '.join(_QMAX)} scales, not {quant_dtype!r}")
    lines = [f"TRT-{int(trt_version)}-EntropyCalibration2"]
    for name, r in table.items():
        if any(c in name for c in "\n\r"):
            raise UsageError(f"tensor name {name!r} holds a line break: TensorRT caches cannot store it")
        amax = max(abs(r.lo), abs(r.hi))
        scale = max(amax / _QMAX[quant_dtype], 2.0**-126)
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(lines) + "\n")
    return os.fspath(path)


def read_trt_cache(path: str | os.PathLike) -> dict[str, float]:
    """Tensor name -> float32 scale from a TensorRT calibration cache."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UsageError(f"TensorRT cache {path} does not exist: check the path")
    with open(path, encoding="utf-8") as f:
        header, *rows = f.read().splitlines()
    if not header.startswith("TRT-"):
        raise DataError(f"{path} is not a TensorRT calibration cache (first line {header[:40]!r})")
    scales = {}
    for row in rows:
        if not row.strip():
            continue
        name, sep, hexval = row.rpartition(": ")
        try:
            scales[name] = struct.unpack(">f", bytes.fromhex(hexval.strip()))[0]
        except (ValueError, struct.error):
            raise DataError(f"{path}: line {row[:60]!r} is not 'name: <hex float32>'") from None
        if not sep:
            raise DataError(f"{path}: line {row[:60]!r} is not 'name: <hex float32>'")
    return scales
