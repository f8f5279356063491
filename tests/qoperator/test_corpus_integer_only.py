"""Issue 5: every corpus graph through edgeq.quantize(format=qoperator, integer_only=True).

Each result passes onnx.checker (full_check), loads in onnxruntime and stays within
MIN_SQNR_DB of fp32 on held-out feeds; each float island in report["qoperator"] has a reason.

None of the corpus graphs becomes integer-only end to end, so edgeq.reference.run refuses every
one with an UnsupportedError naming a node (allowed: the float parts are listed in FLOAT_PARTS):
  - float islands between integer ops: mobilenetv3_block (HardSigmoid, Mul of the SE block),
    yolo_style (Split, Resize), old_torch_style (Resize, before a float-output QGemm);
  - a float head and/or tail only (no island): paddle_style (Softmax), tf_style (NHWC Transpose,
    ReduceMean, dense head, Softmax), transformer_layer (Gather/Range embeddings, LayerNorm,
    attention; only ffn.down is integer), if_loop (If/Loop; only the head MatMul is integer),
    lstm_model (LSTM; nothing at all is integer).
So the reference is checked on the integer segments instead: each maximal QuantizeLinear ->
... -> DequantizeLinear/float-QGemm part, cut out with onnx.utils.Extractor and fed
onnxruntime's own values at its float inputs, must agree with onnxruntime within 1 LSB on
>= 99.9% of elements, end to end and op by op (edgeq.reference.agreement, single rounding).
"""

from __future__ import annotations

import re

import onnx
import onnx_ir as ir
import pytest

import edgeq
from corpus.builders import CORPUS
from edgeq.metrics import sqnr_db
from ortutil import run_ort

MIN_SQNR_DB = 25.0  # as tests/corpus/test_quantize_corpus.py
MIN_AGREEMENT = 0.999
# op types of each model that the reference meets first and refuses (its float parts)
FLOAT_PARTS = {
    "if_loop": "ReduceMean",
    "lstm_model": "LSTM",
    "mobilenetv3_block": "Conv",  # the stem Conv stays float (small, isolated)
    "old_torch_style": "Resize",
    "paddle_style": "Softmax",
    "tf_style": "Transpose",
    "transformer_layer": "Range",
    "yolo_style": "Split",
}


@pytest.fixture(scope="module", params=sorted(CORPUS))
def quantized(request):
    name = request.param
    original, feeds_fn = CORPUS[name]()
    config = edgeq.QuantConfig(format="qoperator", integer_only=True)
    result = edgeq.quantize(original, config, feeds_fn(8, 0), progress=False)
    return name, original, result, ir.to_proto(result.model), feeds_fn(2, 100)


def _segments(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """Float inputs and outputs of the integer parts: the inputs of QuantizeLinear not fed by a
    DequantizeLinear, and the DequantizeLinear / float-QGemm outputs read by a float op."""
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in model.graph.output}
    ins = [n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"
           and getattr(producer.get(n.input[0]), "op_type", None) != "DequantizeLinear"]
    outs = []
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" or (n.op_type == "QGemm" and len(n.input) < 8):
            out = n.output[0]
            if out in graph_outputs or any(r.op_type != "QuantizeLinear" for r in readers.get(out, [])):
                outs.append(out)
    return list(dict.fromkeys(ins)), list(dict.fromkeys(outs))


def _unlisted_islands(model: ir.Model, listed: set[str]) -> list[str]:
    """Float nodes reachable from an integer value that feed a QuantizeLinear, not in ``listed``."""
    def reach(starts, forward):
        seen, stack = set(), list(starts)
        while stack:
            node = stack.pop()
            nxt = ([u.node for v in node.outputs for u in v.uses()] if forward else
                   [v.producer() for v in node.inputs if v is not None and v.producer() is not None])
            for n in nxt:
                if n not in seen:
                    seen.add(n)
                    stack.append(n)
        return seen

    graph = model.graph
    after_q = reach([n for n in graph if n.op_type == "QuantizeLinear"], forward=True)
    before_q = reach([n for n in graph if n.op_type == "QuantizeLinear"], forward=False)
    qdq = ("QuantizeLinear", "DequantizeLinear")
    return [f"{n.op_type} {n.name!r}" for n in graph if n in after_q and n in before_q
            and n.op_type not in qdq and n.domain in ("", "ai.onnx") and not n.op_type.startswith("QLinear")
            and any(v.producer() is not None and v.producer().op_type == "DequantizeLinear" for v in n.inputs if v)
            and n.name not in listed]


def test_corpus_integer_only_valid_and_close(quantized):
    name, original, result, model, held_out = quantized
    onnx.checker.check_model(model, full_check=True)
    for feed in held_out:
        for i, (want, got) in enumerate(zip(run_ort(original, feed), run_ort(model, feed))):
            assert got.shape == want.shape
            sqnr = sqnr_db(want, got)
            assert sqnr >= MIN_SQNR_DB, f"{name} output {i}: SQNR {sqnr:.1f} dB"
    section = result.report["qoperator"]
    assert section["format"] == "qoperator" and section["integer_only"] is True
    for island in section["float_islands"]:
        assert island["node"] and island["op_type"] and island["reasons"] and all(island["reasons"]), island


def test_corpus_integer_only_reference(quantized):
    name, _, result, model, held_out = quantized
    section = result.report["qoperator"]
    nodes = {n.name: n.op_type for n in model.graph.node}
    try:
        edgeq.reference.run(model, held_out[0])
    except edgeq.UnsupportedError as error:  # not integer-only end to end (allowed)
        named = [m for m in re.findall(r"'([^']+)'", str(error)) if m in nodes]
        assert named, f"{name}: {error} names no node"
        assert FLOAT_PARTS[name] in {nodes[m] for m in named}, f"{name}: {error}"
    else:  # integer-only end to end: reference vs onnxruntime on the whole model
        assert not section["float_islands"]
        shares = edgeq.reference.agreement(model, held_out)
        assert shares["end_to_end"] >= MIN_AGREEMENT and shares["per_op_worst"] >= MIN_AGREEMENT, shares
        return

    ins, outs = _segments(model)
    if not outs:  # lstm_model: nothing integer
        assert name == "lstm_model" and not any(n.op_type == "QuantizeLinear" for n in model.graph.node)
        return
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    known = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(onnx.helper.make_tensor_value_info(i, onnx.TensorProto.FLOAT, None)
                                for i in ins if i not in known)
    feeds = []
    for feed in held_out:
        values = {**dict(zip([o.name for o in exposed.graph.output], run_ort(exposed, feed))), **feed}
        feeds.append({i: values[i] for i in ins})
    segments = onnx.utils.Extractor(model).extract_model(ins, outs)
    ops = {n.op_type for n in segments.graph.node}
    assert ops & {"QLinearConv", "MatMulInteger", "QGemm", "QLinearMatMul"}, ops
    shares = edgeq.reference.agreement(segments, feeds)
    assert shares["end_to_end"] >= MIN_AGREEMENT, (name, shares["end_to_end"])
    assert shares["per_op_worst"] >= MIN_AGREEMENT, (name, shares["per_op"])


# old_torch_style is the case that needed it: a Resize between MaxPool (int8) and a QGemm with a
# float output, which ends the integer part without any DequantizeLinear
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_report_lists_every_float_island(name):
    """A float op between a DequantizeLinear and a QuantizeLinear (integer on both sides) is an
    island; the report must list it, whatever ends the integer part after it."""
    original, feeds_fn = CORPUS[name]()
    result = edgeq.quantize(original, edgeq.QuantConfig(format="qoperator", integer_only=True),
                            feeds_fn(8, 0), progress=False)
    listed = {island["node"] for island in result.report["qoperator"]["float_islands"]}
    missed = _unlisted_islands(result.model, listed)
    assert not missed, f"{name}: float islands the report does not list: {missed}"
