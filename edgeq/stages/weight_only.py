"""The ``weight-only`` mode: int4 (or int8) weights of MatMul/Gemm in blocks along K, float
compute; large Gather tables (embeddings) int8 per row. No calibration data needed; with it,
the codes are rounded by GPTQ against each layer's inputs.

    load -> prepare -> WeightOnlyPass (passes/weight_only.py) -> QuantizeEmbeddingsPass -> check
         -> MatMulNBits' accuracy_level (unset: measured, stages/accuracy_level.py) -> report

What language models and other MatMul-bound graphs ship as on the edge: the weights are the
memory traffic, and 4 bits of them with one scale per 32 make the file 5-6x smaller (tiny_lm 5.3x,
a 57M decoder 6.1x: docs/benchmarks.md, Language models).
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeq.config import QuantConfig
    from edgeq.stages.result import QuantResult

__all__ = ["quantize_weight_only", "weight_only_pass"]

DQ_OPSET = 21  # DequantizeLinear with block_size and int4 types
SLOWER = 0.97  # a decode step under this x fp32's speed (3% timing noise) is reported as slower


def weight_only_pass(config: QuantConfig, hessians: dict | None = None, codes: dict | None = None) -> Any:
    """The ``WeightOnlyPass`` the config asks for (``hessians``: GPTQ rounding, from data;
    ``codes``: rounded layers shared between passes over copies of one graph)."""
    from edgeq.config import PerBlock
    from edgeq.passes.weight_only import WeightOnlyPass

    bits = 4 if config.weights == "int4" else 8
    block = config.granularity.size if isinstance(config.granularity, PerBlock) else 32
    return WeightOnlyPass(bits=bits, block=block, symmetric=config.symmetric, weight_op=config.weight_op,
                          accuracy_level=config.accuracy_level or 0, head_bits=8,
                          keep=frozenset(config.precision.nodes("fp32")), hessians=hessians,
                          eight_bit=frozenset(config.precision.nodes("int8")), codes=codes)


def _embeddings(model: Any) -> int:
    """(Gather tables) int8 per row, as the other modes store them."""
    import numpy as np

    from edgeq.graph import const_array
    from edgeq.passes.plan import QuantPlan, Role
    from edgeq.passes.quantize_embeddings import QuantizeEmbeddingsPass
    from edgeq.passes.select import MIN_EMBEDDING

    plan = QuantPlan()
    for node in model.graph:
        table = const_array(node.inputs[0]) if node.op_type == "Gather" and node.domain == "" else None
        if (table is not None and table.dtype == np.float32 and table.ndim >= 2 and table.size >= MIN_EMBEDDING
                and const_array(node.inputs[1]) is None):
            plan.decide(node, Role.WEIGHT_ONLY, "")
    if plan.decisions:
        QuantizeEmbeddingsPass(plan)(model)
    return len(plan.decisions)


def _hessians(model: Any, data: Any, config: QuantConfig) -> dict:
    """``X^T X`` of every MatMul/Gemm input with a constant 2-D weight, over the calibration data."""
    from edgeq.calibrate.grams import gram_matrices
    from edgeq.graph import const_array

    names = sorted({n.inputs[0].name for n in model.graph if n.op_type in ("MatMul", "Gemm") and n.domain == ""
                    and len(n.inputs) > 1 and n.inputs[0] is not None and n.inputs[0].name
                    and const_array(n.inputs[1]) is not None and const_array(n.inputs[1]).ndim == 2})
    return gram_matrices(model, data, names, config.max_samples) if names else {}


def _decoder_bits(model: Any, config: QuantConfig, prepared: Any, hessians: dict, progress: bool
                  ) -> tuple[QuantConfig, dict, list, bytes]:
    """The config with the per-layer bits that meet ``max_ppl_increase`` (stages/decoder_bits.py),
    the report's section, the sequences scored and the prepared float graph's bytes."""
    import onnx_ir as ir

    from edgeq.calibrate.collect import progress_bar
    from edgeq.errors import UsageError
    from edgeq.runtime.generate import INPUTS, OUTPUTS
    from edgeq.stages.decoder_bits import MAX_BYTES, MAX_FEEDS, choose_bits

    names = {v.name for v in model.graph.inputs}
    if set(INPUTS) - names or OUTPUTS[0] not in {v.name for v in model.graph.outputs}:
        raise UsageError(f"--max-ppl-increase scores next-token likelihood: it needs a decoder with inputs "
                         f"{', '.join(INPUTS)} and output logits (edgeq export-llm writes one), not inputs "
                         f"{', '.join(sorted(names))}")
    if prepared.data is None:
        raise UsageError("--max-ppl-increase needs token sequences to score: pass --calib (feeds of input_ids)")
    try:
        feeds = [f for _, f in itertools.islice(prepared.data.items(), MAX_FEEDS)]
    except UsageError:
        raise UsageError("--max-ppl-increase scores several candidates: give calibration data that can be read "
                         "more than once (files or a list, not a one-shot iterator)") from None
    size = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    if size > MAX_BYTES:
        raise UsageError(f"--max-ppl-increase builds each candidate in memory, and this model's {size / 2**30:.1f} GiB "
                         "of weights pass protobuf's 2 GB: quantize it with --weights int4 alone")
    base = ir.to_proto(model)
    fp32_bytes = base.SerializeToString()
    codes: dict = {}  # each layer rounded once per bit width, whatever the candidate

    def with_bits(eight: frozenset[str], fp32: frozenset[str]) -> QuantConfig:
        return config.replace(precision=config.precision.with_([*((n, "int8") for n in eight),
                                                                *((n, "fp32") for n in fp32)]))

    def build(eight: frozenset[str], fp32: frozenset[str]) -> tuple[bytes, list[dict]]:
        candidate = ir.from_proto(base)
        wo = weight_only_pass(with_bits(eight, fp32), hessians, codes)
        wo(candidate)
        _embeddings(candidate)
        return ir.to_proto(candidate).SerializeToString(), wo.quantized

    with progress_bar(progress) as bar:
        task = bar.add_task("per-layer bits", total=None)
        eight, fp32, section = choose_bits(build, fp32_bytes, feeds, config.max_ppl_increase,
                                           lambda text: bar.update(task, description=f"per-layer bits: {text}"))
    return with_bits(eight, fp32), section, feeds, fp32_bytes


def _finish_bits(model: Any, section: dict, feeds: list, fp32_model: bytes, note: str) -> str:
    """Once the accuracy level is set: the returned model scored again (level 4, int8 compute, that
    breaks the target goes back to 0) and its decode step timed against fp32's, so that every
    figure in the report is the returned model's."""
    import math

    import onnx_ir as ir

    from edgeq.stages.accuracy_level import _set_level
    from edgeq.stages.decoder_bits import decode_ms, mean_nll

    data = ir.to_proto(model).SerializeToString()
    levels = {n.attributes["accuracy_level"].value for n in model.graph if n.op_type == "MatMulNBits"
              and "accuracy_level" in n.attributes}
    fp32_nll = section["fp32_nll"]
    if not levels <= {0}:
        nll = mean_nll(data, feeds)  # the sequences the choice was scored on
        if nll - fp32_nll <= math.log1p(section["max_ppl_increase"]):
            section.update(nll=nll, ppl=round(math.exp(nll), 5), ppl_ratio=round(math.exp(nll - fp32_nll), 5))
        else:
            _set_level(model, 0)
            data = ir.to_proto(model).SerializeToString()
            note = (note + "; " if note else "") + (
                f"accuracy_level 0 kept after all: level 4 moved perplexity to {math.exp(nll - fp32_nll):.4f}x fp32, "
                "past --max-ppl-increase")
    times = decode_ms({"fp32": fp32_model, "quantized": data}, feeds[0])
    section["decode_ms"] = {k: round(v, 4) for k, v in times.items()}
    section["decode_speedup"] = round(times["fp32"] / times["quantized"], 3)
    if section["decode_speedup"] < SLOWER:  # smaller, but slower here: say so, and what to try
        note = (note + "; " if note else "") + (
            f"the answer's decode step is {section['decode_speedup']:.2f}x fp32's speed on this CPU (1 thread): "
            "smaller, not faster here; MatMulNBits' int8 compute (--accuracy-level 4) is what makes int4 fast on "
            "CPUs with int8 dot products")
    return note


def quantize_weight_only(model: Any, config: QuantConfig, data: Any = None, *, eval_data: Any = None,
                         labels: Any = None, ranges: Any = None, progress: bool = True) -> QuantResult:
    """Handler of the ``weight-only`` row of the mode table (``data``: GPTQ rounding where given;
    ``ranges`` unused)."""

    from edgeq.stages.check import check
    from edgeq.stages.load import load, prepare
    from edgeq.stages.report import finish, plain_report
    from edgeq.stages.result import QuantResult

    start = time.perf_counter()
    if config.weight_op == "dequantize" and (config.opset or 0) < DQ_OPSET:
        config = config.replace(opset=DQ_OPSET)
    prepared = prepare(load(model, data, keep_fp32=eval_data is not None), config)
    model = prepared.model
    hessians = _hessians(model, prepared.data, config) if prepared.data is not None else {}
    bits_section, bits_feeds, bits_fp32 = None, None, b""
    if config.max_ppl_increase is not None:
        config, bits_section, bits_feeds, bits_fp32 = _decoder_bits(model, config, prepared, hessians, progress)
    wo = weight_only_pass(config, hessians)
    wo(model)
    tables = _embeddings(model)
    check(model)
    level_note = ""
    if config.weight_op == "matmulnbits" and config.accuracy_level is None and wo.quantized:
        from edgeq.errors import UsageError
        from edgeq.stages.accuracy_level import choose_accuracy_level

        try:
            feeds = [f for _, f in itertools.islice(prepared.data.items(), 8)] if prepared.data is not None else None
        except UsageError:  # a one-shot iterator, already read for GPTQ
            feeds = None
        level_note = choose_accuracy_level(model, feeds)
    if bits_section is not None:
        level_note = _finish_bits(model, bits_section, bits_feeds, bits_fp32, level_note)
    notes = []
    heads = [q["node"] for q in wo.quantized if q["bits"] != wo.bits and q["node"] not in wo.eight_bit]
    if heads:
        notes.append(f"{', '.join(heads)} kept 8-bit weights: {'it feeds' if len(heads) == 1 else 'they feed'} a graph "
                     "output (a language model's head, a classifier's logits), which 4 bits move most")
    gptq = sum(q["rounding"] == "GPTQ" for q in wo.quantized)
    if gptq:
        notes.append(f"{gptq} of {len(wo.quantized)} layers rounded by GPTQ against their inputs on the calibration "
                     "data (the grid per block is the same; round to nearest without data)")
    if level_note:
        notes.append(level_note)
    if tables:
        notes.append(f"{tables} Gather table(s) (embeddings) stored int8, one scale per row")
    if config.weight_op == "dequantize":
        notes.append("onnxruntime fuses DequantizeLinear -> MatMul into MatMulNBits with its session option "
                     "session.qdq_matmulnbits_accuracy_level (default 4: int8 compute), not this model's setting")
    report = plain_report(model, config, prepared, quantized_count=len(wo.quantized) + tables, quantized=wo.quantized,
                          left_float=wo.float)
    report["notes"] = notes
    if bits_section is not None:
        report["decoder_bits"] = bits_section
        counts = f"{len(bits_section['eight_bit'])} layer(s) 8-bit, {len(bits_section['fp32'])} float"
        notes.insert(0, f"per-layer bits to --max-ppl-increase {bits_section['max_ppl_increase']:.1%}: {counts}, "
                        f"perplexity {bits_section['ppl']:.4g} vs fp32 {bits_section['fp32_ppl']:.4g} "
                        f"({bits_section['ppl_ratio']:.4f}x) on {bits_section['tokens_scored']} calibration tokens"
                        + ("" if bits_section["met"] else ": the target is NOT met even with every MatMul float")
                        + f"; decode step {bits_section['decode_ms']['quantized']:.3g} ms vs fp32 "
                          f"{bits_section['decode_ms']['fp32']:.3g} ms ({bits_section['decode_speedup']:.2f}x, 1 thread)")
    result = QuantResult(model=model, report=report, ranges=None, source=prepared.source)
    return finish(result, prepared, config, eval_data, labels, start)
