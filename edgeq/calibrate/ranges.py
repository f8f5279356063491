"""The ranges table: value name -> observed range, the method that chose it, and a summary.

It is the contract between calibration and the quantize passes. JSON is its file form
(``--ranges FILE`` reloads it and skips calibration).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

from edgeq.errors import DataError, UsageError
from edgeq.files import regular_file

__all__ = ["TensorRange", "RangesTable"]

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class TensorRange:
    """The clipping range ``[lo, hi]`` chosen for one activation tensor.

    ``min``/``max`` are the raw extremes seen in the data; ``lo``/``hi`` the range to quantize
    to (equal to min/max for the minmax method, narrower for percentile/entropy/mse).
    ``summary`` holds method details (histogram bins, percentiles, chosen threshold ...).
    """

    lo: float
    hi: float
    min: float
    max: float
    method: str = "minmax"
    summary: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("lo", "hi", "min", "max"):
            if not math.isfinite(getattr(self, name)):
                raise DataError(f"range {name}={getattr(self, name)} is not finite")
        if self.lo > self.hi:
            raise DataError(f"range lo={self.lo} is above hi={self.hi}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "lo": self.lo,
            "hi": self.hi,
            "min": self.min,
            "max": self.max,
            "method": self.method,
            "summary": dict(self.summary),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorRange:
        lo, hi = float(data["lo"]), float(data["hi"])
        return cls(
            lo=lo,
            hi=hi,
            min=float(data.get("min", lo)),
            max=float(data.get("max", hi)),
            method=str(data.get("method", "minmax")),
            summary=dict(data.get("summary", {})),
        )


class RangesTable(Mapping[str, TensorRange]):
    """An immutable mapping of value name to ``TensorRange`` with JSON I/O."""

    def __init__(
        self,
        ranges: Mapping[str, TensorRange],
        *,
        method: str = "minmax",
        num_samples: int = 0,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self._ranges = dict(ranges)
        self.method = method
        self.num_samples = num_samples
        self.meta = dict(meta or {})

    def __getitem__(self, name: str) -> TensorRange:
        return self._ranges[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ranges)

    def __len__(self) -> int:
        return len(self._ranges)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "edgeq-ranges",
            "version": FORMAT_VERSION,
            "method": self.method,
            "num_samples": self.num_samples,
            "meta": self.meta,
            "ranges": {name: r.to_dict() for name, r in self._ranges.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RangesTable:
        if data.get("format") != "edgeq-ranges" or "ranges" not in data:
            raise UsageError("not an edgeq ranges table: write one with `edgeq quantize --save-ranges`")
        return cls(
            {name: TensorRange.from_dict(r) for name, r in data["ranges"].items()},
            method=str(data.get("method", "minmax")),
            num_samples=int(data.get("num_samples", 0)),
            meta=data.get("meta", {}),
        )

    def save(self, path: str | os.PathLike) -> str:
        from edgeq.io import atomic_path

        with atomic_path(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, indent=1)
        return os.fspath(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> RangesTable:
        path = regular_file(path, "ranges file")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (ValueError, OSError) as e:
            raise UsageError(f"ranges file {path} is not valid JSON ({e}): regenerate it") from None
        return cls.from_dict(data)
