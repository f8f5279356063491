"""Integer MatMul kernels written as the exact arithmetic they stand for, in float64.

    MatMulInteger(A, B, a_zp, b_zp)                    ==>  Cast<int32>(MatMul(f64(A) - a_zp, f64(B) - b_zp))
    MatMulIntegerToFloat(A, B, sa, sb, a_zp, b_zp, b)  ==>  f32(MatMul(f64(A) - a_zp, f64(B) - b_zp)) * (sa * sb) + b
    DynamicQuantizeMatMul(X, B, sb, b_zp, b)           ==>  DynamicQuantizeLinear(X) -> (A, sa, a_zp), then as above

1. Why: ONNX defines these products as exact integer sums; onnxruntime's u8s8 kernels on x86
   without VNNI add each pair of products in 16 bits first and saturate there (``runtime/cpu.py``).
   A model whose 8-bit weights static mode measured and kept on such a CPU then runs on kernels
   that depart from what the file states. QAT's export check (``qat/export.py`` (6)) runs this
   form, to compare torch with the file's arithmetic rather than with this CPU's kernels.
2. float64 holds every such sum exactly (|A - a_zp| <= 255, |B - b_zp| <= 255, K far below
   2^36); the scale product is float32, as onnxruntime's is.
3. Zero points as onnxruntime takes them: one for A; one for B or one per column of B (rank 1,
   broadcast along B's last axis).
4. For checks, not for deployment: the result runs at float64 speed. Main graph and subgraphs.
"""

from __future__ import annotations

import logging

import onnx_ir as ir

from edgeq.graph import MS_DOMAIN, graphs_of

__all__ = ["IntegerAsFloatPass", "OPS"]

logger = logging.getLogger(__name__)

OPS = {("", "MatMulInteger"), (MS_DOMAIN, "MatMulIntegerToFloat"), (MS_DOMAIN, "DynamicQuantizeMatMul")}


def _input(node: ir.Node, i: int) -> ir.Value | None:
    return node.inputs[i] if len(node.inputs) > i else None


class IntegerAsFloatPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = 0
        for graph in graphs_of(model):
            for node in list(graph):
                if (node.domain, node.op_type) in OPS:
                    self._rewrite(graph, node)
                    count += 1
        if count:
            logger.info("integer_as_float: %d integer MatMul(s) as exact float64 arithmetic", count)
        return ir.passes.PassResult(model, modified=bool(count))

    def _rewrite(self, graph: ir.Graph, node: ir.Node) -> None:
        name = node.name or node.outputs[0].name
        new: list[ir.Node] = []

        def add(op: str, inputs: list[ir.Value | None], attributes: dict | None = None, **kw) -> ir.Value:
            new.append(ir.node(op, inputs, attributes or {}, name=f"{name}_exact_{len(new)}", **kw))
            return new[-1].outputs[0]

        def centred(x: ir.Value, zp: ir.Value | None) -> ir.Value:  # (3)
            x = add("Cast", [x], {"to": ir.DataType.DOUBLE})
            return x if zp is None else add("Sub", [x, add("Cast", [zp], {"to": ir.DataType.DOUBLE})])

        if node.op_type == "DynamicQuantizeMatMul":
            dql = ir.node("DynamicQuantizeLinear", [node.inputs[0]], num_outputs=3, name=f"{name}_exact_dql")
            new.append(dql)
            a, sa, a_zp = dql.outputs
            b, sb, b_zp, bias = node.inputs[1], node.inputs[2], _input(node, 3), _input(node, 4)
        elif node.op_type == "MatMulIntegerToFloat":
            a, b, sa, sb = node.inputs[:4]
            a_zp, b_zp, bias = _input(node, 4), _input(node, 5), _input(node, 6)
        else:
            a, b = node.inputs[:2]
            sa = sb = bias = None
            a_zp, b_zp = _input(node, 2), _input(node, 3)
        product = add("MatMul", [centred(a, a_zp), centred(b, b_zp)])  # (2)
        if node.op_type == "MatMulInteger":
            out = add("Cast", [product], {"to": ir.DataType.INT32})
        else:
            out = add("Mul", [add("Cast", [product], {"to": ir.DataType.FLOAT}), add("Mul", [sa, sb])])
            if bias is not None:
                out = add("Add", [out, bias])
        ir.convenience.replace_nodes_and_values(graph, node, [node], new, [node.outputs[0]], [out])
