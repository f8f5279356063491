"""quantizability.check: each kind of finding on a small graph; the model is left unchanged."""

from __future__ import annotations

import onnx
import onnx_ir as ir
import pytest

from edgeq.prepare.quantizability import Finding, check


def _findings(text: str) -> list[Finding]:
    model = ir.from_proto(onnx.parser.parse_model(text))
    before = ir.to_proto(model).SerializeToString()
    findings = check(model)
    assert ir.to_proto(model).SerializeToString() == before  # check never modifies the model
    return findings


def _one(findings: list[Finding], word: str) -> Finding:
    hits = [f for f in findings if word in f.message or word in f.where]
    assert len(hits) == 1, (word, findings)
    return hits[0]


def test_clean_static_model_has_no_findings():
    assert _findings(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[1,3,4,4] x) => (float[1,2,4,4] y) <float[2,3,1,1] w = {1,2,3,4,5,6}> {
          c = Conv(x, w)
          y = Relu(c)
        }
        """
    ) == []


def test_opset_constant_weight_dynamic_dims():
    findings = _findings(
        """
        <ir_version: 6, opset_import: ["" : 11]>
        g (float[N,3,4,4] x) => (float[N,2,4,4] y) {
          w = Constant <value = float[2,3,1,1] {1,2,3,4,5,6}> ()
          wi = Identity(w)
          y = Conv <pads = [0,0,0,0]> (x, wi)
        }
        """
    )
    assert _one(findings, "opset 11").severity == "limit"
    assert _one(findings, "Constant nodes").severity == "info"
    dyn = _one(findings, "dynamic dims")
    assert dyn.severity == "info" and "x [N,3,4,4]" in dyn.where


def test_fp16_is_a_limit_that_quantize_handles():
    findings = _findings(
        """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float16[2,3] x) => (float16[2,3] y) { y = Relu(x) }
        """
    )
    dtype = _one(findings, "FLOAT16 tensors")
    assert dtype.severity == "limit" and "computes it in fp32" in dtype.message


def test_subgraph_custom_domain_and_float_island():
    findings = _findings(
        """
        <ir_version: 8, opset_import: ["" : 17, "com.example" : 1]>
        g (bool c, float[2,4] x) => (float[2,4] y, float[2,4] z) <float[4,4] w = {1,0,0,0,0,1,0,0,0,0,1,0,0,0,0,1},
                                                 float[4] g = {1,1,1,1}> {
          m = MatMul(x, w)
          n = LayerNormalization(m, g)
          y = MatMul(n, w)
          z = If (c) <
            then_branch = t () => (float[2,4] o) { o = MatMul(x, w) },
            else_branch = e () => (float[2,4] o) { o = com.example.Thing(x) }
          >
        }
        """
    )
    sub = _one(findings, "If node")
    assert sub.severity == "limit" and "MatMul x1" in sub.message
    assert _one(findings, "domain com.example").severity == "limit"
    island = _one(findings, "LayerNormalization")
    assert island.severity == "limit" and "no int8 kernel" in island.message


def test_unknown_shapes_are_a_limit():
    findings = _findings(
        """
        <ir_version: 8, opset_import: ["" : 13, "com.microsoft" : 1]>
        g (float[2,4] x) => (float[2,4] y) { a = com.microsoft.Gelu(x)  y = Relu(a) }
        """
    )
    assert "--calib" in _one(findings, "shapes ONNX inference cannot find").message


def test_finding_rejects_unknown_severity():
    with pytest.raises(ValueError, match="severity"):
        Finding("fatal", "x", "y")
