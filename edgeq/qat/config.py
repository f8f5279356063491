"""``QATConfig``: the scheme quantization-aware training simulates and how it trains it."""

from __future__ import annotations

import dataclasses
from typing import Any

from edgeq.errors import UsageError

__all__ = ["QATConfig"]


@dataclasses.dataclass(frozen=True)
class QATConfig:
    """How edgeq's QDQ model is simulated in torch.

    ``weight_bits``: 8 (edgeq's int8 weights, the levels this CPU's kernels allow) or 4 (int4 per
    output channel, symmetric [-7, 7], stored as int4 DequantizeLinear, opset 21).
    ``activations``: "uint8" (asymmetric, edgeq's default) or "int8" (symmetric).
    ``scales``: "learned" (LSQ: scales are parameters trained with the weights) or "observed"
    (running min/max of activations, max |w| of weights).
    ``per_channel``: weight scales per output channel (edgeq's default) or one per tensor.
    ``per_token``: MatMuls quantized at run time get one scale per row of their input (what
    transformers need: ``passes/per_token.py``), instead of one per tensor.
    ``precision``: per-layer precision (node name or op type -> "fp32" or "int16"), the user's;
    fp32 layers stay float and train as float (``prepare(plan=)`` takes an auto run's).
    """

    weight_bits: int = 8
    activations: str = "uint8"
    scales: str = "learned"
    per_channel: bool = True
    precision: tuple[tuple[str, str], ...] = ()
    per_token: bool = False

    def __post_init__(self) -> None:
        if self.weight_bits not in (4, 8):
            raise UsageError(f"weight_bits={self.weight_bits}: QAT simulates 8-bit or 4-bit weights")
        if self.activations not in ("uint8", "int8"):
            raise UsageError(f"activations={self.activations!r}: choose uint8 or int8")
        if self.scales not in ("learned", "observed"):
            raise UsageError(f"scales={self.scales!r}: choose learned or observed")
        precision = self.precision.items() if isinstance(self.precision, dict) else self.precision
        object.__setattr__(self, "precision", tuple((str(k), str(v)) for k, v in precision))
        for node, kind in self.precision:
            if kind not in ("fp32", "int16"):
                raise UsageError(f"precision {node}={kind}: QAT keeps a layer fp32 or int16, or quantizes it (int8/int4)")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["precision"] = dict(self.precision)
        return data
