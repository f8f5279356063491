"""Describe an ONNX model: opsets, inputs/outputs, operator histogram, parameters, MACs.

MACs (multiply-accumulates) are counted for the compute-heavy ops, from shapes that
``onnx.shape_inference`` gives once every symbolic input dim is fixed (to 1, or the size given in
``dims``):

* Conv, QLinearConv, ConvInteger:  MACs = |output| * |W[1:]|        (W: [M, C/group, k...])
* ConvTranspose:                   MACs = |input|  * |W[1:]|        (W: [C, M/group, k...])
* Gemm, MatMul and their integer forms: MACs = |output| * K          (K: A's reduced dim)

A MAC counts as int8 when the op is an integer op (QLinearConv, QLinearMatMul, ConvInteger,
MatMulInteger, com.microsoft QGemm/MatMulIntegerToFloat/DynamicQuantizeMatMul) or a float op whose
activation and weight both come from DequantizeLinear of int8/uint8 data (a QDQ group onnxruntime
fuses into an int8 kernel).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
from typing import Any

from edgeq.errors import ModelLoadError

__all__ = ["ModelInfo", "describe", "quantized_ops", "refuse_quantized"]

_CONV_LIKE = {"Conv": 1, "QLinearConv": 3, "ConvInteger": 1}  # op -> index of W
_MATMUL_LIKE = {  # op -> (index of A, has transA)
    "MatMul": (0, False),
    "Gemm": (0, True),
    "QLinearMatMul": (0, False),
    "MatMulInteger": (0, False),
    "QGemm": (0, True),
    "MatMulIntegerToFloat": (0, False),
    "DynamicQuantizeMatMul": (0, False),
}
_INTEGER_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm",
                "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
_QDQ_CAPABLE = {"Conv", "Gemm", "MatMul"}
_INT8_TYPES = {2, 3}  # TensorProto.UINT8, TensorProto.INT8
_PACKED_4BIT = {21, 22, 23}  # UINT4, INT4, FLOAT4E2M1


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What ``edgeq inspect`` shows; ``to_dict`` is its JSON."""

    path: str | None
    file_bytes: int | None  # the model file plus its external-data files
    external_data: list[str]  # the external-data files its tensors reference (relative to the model's folder)
    ir_version: int
    producer: str
    opsets: dict[str, int]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    op_histogram: dict[str, int]
    params: int
    param_bytes: int
    params_by_dtype: dict[str, dict[str, int]]
    macs: int
    int8_macs: int
    macs_by_op: dict[str, int]
    unknown_macs_nodes: list[str]
    fixed_dims: dict[str, int]

    @property
    def int8_share(self) -> float | None:
        return self.int8_macs / self.macs if self.macs else None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["int8_share"] = self.int8_share
        return d


def _load(model: Any) -> tuple[Any, str | None]:
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model, None
    from edgeq.runtime.session import check_model_file

    path = os.fspath(model)
    check_model_file(path)
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelLoadError(
            f"model file {path} is not a valid ONNX model ({first}): it may be truncated or corrupt; re-export it"
        ) from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelLoadError(f"model file {path} holds no graph: it may be truncated or not ONNX; re-export it")
    _check_text(proto, path)
    return proto, path


def _check_text(proto: Any, path: str) -> None:
    """Names, op types and domains are UTF-8 text (protobuf hands invalid bytes back as ``bytes``)."""
    for graph in _graphs(proto.graph):
        names = [v.name for v in (*graph.input, *graph.output, *graph.initializer)]
        for node in graph.node:
            names += [node.name, node.op_type, node.domain, *node.input, *node.output]
        bad = next((n for n in names if not isinstance(n, str)), None)
        if bad is not None:
            raise ModelLoadError(f"model file {path} holds a name that is not UTF-8 text ({bad!r}): it is corrupt; "
                                 "re-export it")


def _graphs(graph: Any) -> list[Any]:
    out = [graph]
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                out.extend(_graphs(attr.g))
            for sub in attr.graphs:
                out.extend(_graphs(sub))
    return out


def _dtype_name(elem_type: int) -> str:
    import onnx

    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        try:
            return onnx.TensorProto.DataType.Name(elem_type).lower()
        except ValueError:  # a number no ONNX version defines: a corrupt file
            return f"unknown dtype {elem_type}"


def _value_shape(value: Any) -> tuple[int, ...] | None:
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(d.dim_value)
    return tuple(dims)


def _io(values: Any, initializer_names: set[str]) -> list[dict[str, Any]]:
    rows = []
    for v in values:
        if v.name in initializer_names:
            continue
        t = v.type.tensor_type
        shape = None
        if t.HasField("shape"):
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
        rows.append({"name": v.name, "dtype": _dtype_name(t.elem_type) if t.elem_type else None, "shape": shape})
    return rows


def _fix_input_dims(proto: Any, dims: dict[str, int]) -> tuple[Any, dict[str, int]]:
    import onnx

    from edgeq.runtime.feeds import symbolic_dim

    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    init = {t.name for t in fixed.graph.initializer}
    used: dict[str, int] = {}
    for value in fixed.graph.input:
        if value.name in init or not value.type.tensor_type.HasField("shape"):
            continue
        for axis, d in enumerate(value.type.tensor_type.shape.dim):
            if not d.HasField("dim_value"):
                key = symbolic_dim(d.dim_param) or f"{value.name}[{axis}]"
                size = int(dims.get(key, 1))
                used[key] = size
                d.Clear()
                d.dim_value = size
    return fixed, used


_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def _check_held(tensor: Any, declared: int) -> None:
    """An initializer stored in the file holds the bytes its shape declares (a declared 2**40
    dimension over a few bytes is a corrupt or hostile file, refused before anything reads it)."""
    import onnx

    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return  # checked against the data file's size on load (edgeq.io.check_model_path)
    if tensor.HasField("raw_data"):
        held = len(tensor.raw_data)
    elif any(len(getattr(tensor, field)) for field in _TYPED_FIELDS):
        return
    else:
        held = 0
    if held < declared:
        raise ModelLoadError(f"initializer {tensor.name!r} declares shape {list(tensor.dims)} ({declared:,} bytes) "
                             f"but holds {held:,} bytes: the model is truncated or corrupt; re-export it")


def _count_params(graphs: list[Any]) -> tuple[int, int, dict[str, dict[str, int]]]:
    by_dtype: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"count": 0, "bytes": 0})

    def add(elem_type: int, count: int) -> int:
        import numpy as np

        if elem_type in _PACKED_4BIT:
            nbytes = (count + 1) // 2
        else:
            try:
                nbytes = count * np.dtype(_dtype_name(elem_type)).itemsize
            except TypeError:
                nbytes = count
        entry = by_dtype[_dtype_name(elem_type)]
        entry["count"] += count
        entry["bytes"] += nbytes
        return nbytes

    for graph in graphs:
        for t in graph.initializer:
            _check_held(t, add(t.data_type, math.prod(t.dims)))
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for attr in node.attribute:
                    if attr.name == "value":
                        add(attr.t.data_type, math.prod(attr.t.dims))
                    elif attr.name == "value_floats":
                        add(1, len(attr.floats))
                    elif attr.name == "value_ints":
                        add(7, len(attr.ints))
    total = sum(e["count"] for e in by_dtype.values())
    total_bytes = sum(e["bytes"] for e in by_dtype.values())
    return total, total_bytes, dict(by_dtype)


def _node_macs(node: Any, shapes: dict[str, tuple[int, ...]]) -> int | None:
    op = node.op_type
    inputs = list(node.input)
    out = shapes.get(node.output[0]) if node.output else None
    if op in _CONV_LIKE:
        w = shapes.get(inputs[_CONV_LIKE[op]]) if len(inputs) > _CONV_LIKE[op] else None
        return None if out is None or w is None else math.prod(out) * math.prod(w[1:])
    if op == "ConvTranspose":
        x = shapes.get(inputs[0])
        w = shapes.get(inputs[1]) if len(inputs) > 1 else None
        return None if x is None or w is None else math.prod(x) * math.prod(w[1:])
    index, has_trans = _MATMUL_LIKE[op]
    a = shapes.get(inputs[index])
    if out is None or a is None or not a:
        return None
    trans_a = has_trans and any(attr.name == "transA" and attr.i for attr in node.attribute)
    k = a[0] if trans_a or len(a) == 1 else a[-1]
    return math.prod(out) * k


def _is_qdq_int8(node: Any, producers: dict[str, Any], elem_types: dict[str, int]) -> bool:
    if node.op_type not in _QDQ_CAPABLE or len(node.input) < 2:
        return False
    for name in node.input[:2]:
        dq = producers.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or elem_types.get(dq.input[0]) not in _INT8_TYPES:
            return False
    return True


def describe(model: Any, dims: dict[str, int] | None = None) -> ModelInfo:
    """Describe a model file (or ``onnx.ModelProto``); symbolic input dims are set from ``dims``
    by name (default 1) for the MAC count."""
    import onnx

    proto, path = _load(model)
    file_size = None
    if path is not None:
        from edgeq.runtime.bench import file_bytes

        file_size = file_bytes(path)
    init_names = {t.name for t in proto.graph.initializer}
    graphs = _graphs(proto.graph)
    histogram = collections.Counter(
        (n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}") for g in graphs for n in g.node
    )
    params, param_bytes, by_dtype = _count_params(graphs)
    external = sorted({
        entry.value
        for g in graphs for t in g.initializer if t.data_location == onnx.TensorProto.EXTERNAL
        for entry in t.external_data if entry.key == "location"
    })

    fixed, used = _fix_input_dims(proto, dict(dims or {}))
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception:  # partial shapes are still useful; nodes without shapes are listed
        inferred = fixed
    shapes: dict[str, tuple[int, ...]] = {}
    elem_types: dict[str, int] = {}
    producers: dict[str, Any] = {}
    for graph in _graphs(inferred.graph):
        for value in [*graph.input, *graph.value_info, *graph.output]:
            elem_types.setdefault(value.name, value.type.tensor_type.elem_type)
            shape = _value_shape(value)
            if shape is not None:
                shapes.setdefault(value.name, shape)
        for t in graph.initializer:
            shapes[t.name] = tuple(t.dims)
            elem_types[t.name] = t.data_type
        for node in graph.node:
            for out in node.output:
                producers[out] = node
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value" and node.output:
                        shapes[node.output[0]] = tuple(attr.t.dims)
                        elem_types[node.output[0]] = attr.t.data_type

    macs = int8 = 0
    by_op: dict[str, int] = collections.Counter()
    unknown: list[str] = []
    for graph in _graphs(inferred.graph):
        for node in graph.node:
            if node.op_type not in _CONV_LIKE and node.op_type not in _MATMUL_LIKE and node.op_type != "ConvTranspose":
                continue
            n = _node_macs(node, shapes)
            if n is None:
                unknown.append(node.name or f"{node.op_type}->{node.output[0]}")
                continue
            macs += n
            by_op[node.op_type] += n
            if node.op_type in _INTEGER_OPS or _is_qdq_int8(node, producers, elem_types):
                int8 += n

    return ModelInfo(
        path=path,
        file_bytes=file_size,
        external_data=external,
        ir_version=proto.ir_version,
        producer=" ".join(p for p in (proto.producer_name, proto.producer_version) if p),
        opsets={(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
        inputs=_io(proto.graph.input, init_names),
        outputs=_io(proto.graph.output, set()),
        op_histogram=dict(histogram.most_common()),
        params=params,
        param_bytes=param_bytes,
        params_by_dtype=by_dtype,
        macs=macs,
        int8_macs=int8,
        macs_by_op=dict(by_op),
        unknown_macs_nodes=unknown,
        fixed_dims=used,
    )


# ops that only a quantized model holds: onnxruntime's dynamic quantizer writes
# DynamicQuantizeLinear + ConvInteger/MatMulInteger, its static quantizer QLinear* or Q/DQ pairs
_QUANTIZED_OPS = (_INTEGER_OPS | {"DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "QAttention",
                                  "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearSigmoid", "QLinearAveragePool",
                                  "QLinearGlobalAveragePool", "QLinearLeakyRelu", "QLinearSoftmax", "MatMulNBits",
                                  "DynamicQuantizeLSTM", "QEmbedLayerNormalization", "QOrderedMatMul"})


def quantized_ops(model: Any) -> dict[str, int]:
    """{op type: count} of the quantized ops in ``model`` (an ``onnx_ir.Model``, subgraphs included)."""
    from edgeq.graph import graphs_of
    counts: collections.Counter[str] = collections.Counter()
    for graph in graphs_of(model):
        counts.update(node.op_type for node in graph if node.op_type in _QUANTIZED_OPS)
    return dict(counts.most_common())


def refuse_quantized(model: Any, name: str | None = None) -> None:
    """UsageError when ``model`` is already quantized: quantizing it again would put a second
    rounding on weights that are int8 already (and Q/DQ around integer kernels)."""
    from edgeq.errors import UsageError

    found = quantized_ops(model)
    if not found:
        return
    ops = ", ".join(f"{n} {op}" for op, n in list(found.items())[:4])
    kind = ("dynamic int8 (DynamicQuantizeLinear)" if "DynamicQuantizeLinear" in found else
            "QDQ (QuantizeLinear/DequantizeLinear)" if {"QuantizeLinear", "DequantizeLinear"} & set(found) else
            "integer-op")
    raise UsageError(f"{name or 'the model'} is already quantized ({kind}: {ops}): quantize its fp32 original "
                     "instead, or use it as it is (edgeq bench, run and compare take it)")
