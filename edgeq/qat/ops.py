"""ONNX operators in torch, for the QAT module that runs edgeq's QDQ graph (``module.py``).

Each entry takes the node's inputs (tensors, None for an omitted optional input) and its
attributes (a dict of plain Python values) and returns its outputs (a tensor or a tuple).
Integer tensors (shapes, indices) stay integer, so shape arithmetic runs as in onnxruntime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["OPS", "supported", "lstm"]

Op = Callable[[list[Any], dict[str, Any]], Any]
OPS: dict[str, Op] = {}

_DTYPES = {1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64,
           9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}


def op(*names: str) -> Callable[[Op], Op]:
    def register(fn: Op) -> Op:
        for name in names:
            OPS[name] = fn
        return fn
    return register


def supported(op_type: str) -> bool:
    return op_type in OPS


def _ints(t: torch.Tensor | None) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _pads(pads: list[int], n: int) -> tuple[list[int], bool]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] -> (symmetric per-dim padding, whether symmetric)."""
    if not pads:
        return [0] * n, True
    begin, end = pads[:n], pads[n:]
    return begin, begin == end


def _asym_pad(x: torch.Tensor, pads: list[int], n: int, value: float = 0.0) -> torch.Tensor:
    torch_pads: list[int] = []
    for i in reversed(range(n)):
        torch_pads += [pads[i], pads[i + n]]
    return F.pad(x, torch_pads, value=value)


def _auto_pad(attrs: dict, x: torch.Tensor, kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    mode = attrs.get("auto_pad", "NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    n = len(kernel)
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        pads_b, pads_e = [], []
        for i in range(n):
            size = x.shape[2 + i]
            out = -(-size // strides[i])
            total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size, 0)
            small, big = total // 2, total - total // 2
            pads_b.append(small if mode == "SAME_UPPER" else big)
            pads_e.append(big if mode == "SAME_UPPER" else small)
        return pads_b + pads_e
    if mode == "VALID":
        return [0] * (2 * n)
    return list(attrs.get("pads", [0] * (2 * n)))


@op("Conv")
def _conv(inputs, attrs):
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    n = w.dim() - 2
    kernel = list(w.shape[2:])
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    pads = _auto_pad(attrs, x, kernel, strides, dilations)
    begin, symmetric = _pads(pads, n)
    if not symmetric:
        x, begin = _asym_pad(x, pads, n), [0] * n
    fn = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
    return fn(x, w, b, strides, begin, dilations, int(attrs.get("group", 1)))


@op("ConvTranspose")
def _conv_transpose(inputs, attrs):
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    n = w.dim() - 2
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    pads = list(attrs.get("pads", [0] * (2 * n)))
    begin, symmetric = _pads(pads, n)
    if not symmetric or "output_shape" in attrs:
        raise NotImplementedError("ConvTranspose with asymmetric pads or output_shape")
    out_pad = list(attrs.get("output_padding", [0] * n))
    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1]
    return fn(x, w, b, strides, begin, out_pad, int(attrs.get("group", 1)), dilations)


@op("Gemm")
def _gemm(inputs, attrs):
    a, b = inputs[0], inputs[1]
    if attrs.get("transA", 0):
        a = a.transpose(0, 1)
    if attrs.get("transB", 0):
        b = b.transpose(0, 1)
    y = attrs.get("alpha", 1.0) * (a @ b)
    if len(inputs) > 2 and inputs[2] is not None:
        y = y + attrs.get("beta", 1.0) * inputs[2]
    return y


def _binary(fn):
    return lambda inputs, attrs: fn(inputs[0], inputs[1])


for _name, _fn in {"MatMul": torch.matmul, "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Pow": torch.pow,
                   "Equal": torch.eq, "Greater": torch.gt, "GreaterOrEqual": torch.ge, "Less": torch.lt,
                   "LessOrEqual": torch.le, "And": torch.logical_and, "Or": torch.logical_or}.items():
    OPS[_name] = _binary(_fn)


@op("Div")
def _div(inputs, attrs):
    a, b = inputs
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


def _fold(fn):
    def run(inputs, attrs):
        out = inputs[0]
        for t in inputs[1:]:
            out = fn(out, t)
        return out
    return run


OPS["Max"], OPS["Min"], OPS["Sum"] = _fold(torch.maximum), _fold(torch.minimum), _fold(torch.add)
OPS["Mean"] = lambda inputs, attrs: _fold(torch.add)(inputs, attrs) / len(inputs)


def _unary(fn):
    return lambda inputs, attrs: fn(inputs[0])


for _name, _fn in {"Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf,
                   "Exp": torch.exp, "Log": torch.log, "Sqrt": torch.sqrt, "Neg": torch.neg, "Abs": torch.abs,
                   "Reciprocal": torch.reciprocal, "Not": torch.logical_not, "Floor": torch.floor,
                   "Ceil": torch.ceil, "Identity": lambda x: x, "Softplus": F.softplus, "Sin": torch.sin,
                   "Cos": torch.cos, "Round": torch.round}.items():
    OPS[_name] = _unary(_fn)


@op("Clip")
def _clip(inputs, attrs):
    x = inputs[0]
    lo = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attrs.get("min")
    hi = inputs[2] if len(inputs) > 2 and inputs[2] is not None else attrs.get("max")
    lo = float(lo) if lo is not None else None
    hi = float(hi) if hi is not None else None
    return torch.clamp(x, lo, hi)


@op("LeakyRelu")
def _leaky(inputs, attrs):
    return F.leaky_relu(inputs[0], attrs.get("alpha", 0.01))


@op("HardSigmoid")
def _hard_sigmoid(inputs, attrs):
    return torch.clamp(inputs[0] * attrs.get("alpha", 0.2) + attrs.get("beta", 0.5), 0.0, 1.0)


@op("HardSwish")
def _hard_swish(inputs, attrs):
    x = inputs[0]
    return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)


@op("Gelu")
def _gelu(inputs, attrs):
    approx = attrs.get("approximate", "none")
    return F.gelu(inputs[0], approximate=approx.decode() if isinstance(approx, bytes) else approx)


OPS["Softmax"] = lambda inputs, attrs: torch.softmax(inputs[0], int(attrs.get("axis", -1)))
OPS["LogSoftmax"] = lambda inputs, attrs: torch.log_softmax(inputs[0], int(attrs.get("axis", -1)))


def _reduce(fn):
    def run(inputs, attrs):
        x = inputs[0]
        axes = _ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else list(attrs.get("axes", []))
        keep = bool(attrs.get("keepdims", 1))
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        return fn(x, axes, keep)
    return run


OPS["ReduceMean"] = _reduce(lambda x, a, k: x.mean(dim=a, keepdim=k))
OPS["ReduceSum"] = _reduce(lambda x, a, k: x.sum(dim=a, keepdim=k))
OPS["ReduceMax"] = _reduce(lambda x, a, k: x.amax(dim=a, keepdim=k))
OPS["ReduceMin"] = _reduce(lambda x, a, k: x.amin(dim=a, keepdim=k))
OPS["ReduceL2"] = _reduce(lambda x, a, k: torch.sqrt((x * x).sum(dim=a, keepdim=k)))


@op("GlobalAveragePool")
def _gap(inputs, attrs):
    x = inputs[0]
    return x.mean(dim=list(range(2, x.dim())), keepdim=True)


@op("GlobalMaxPool")
def _gmp(inputs, attrs):
    x = inputs[0]
    return x.amax(dim=list(range(2, x.dim())), keepdim=True)


def _pool_fn(kind: str):
    def run(inputs, attrs):
        x = inputs[0]
        kernel = list(attrs["kernel_shape"])
        n = len(kernel)
        strides = list(attrs.get("strides", [1] * n))
        dilations = list(attrs.get("dilations", [1] * n))
        pads = _auto_pad(attrs, x, kernel, strides, dilations)
        begin, symmetric = _pads(pads, n)
        ceil = bool(attrs.get("ceil_mode", 0))
        if kind == "max":
            if not symmetric:
                x, begin = _asym_pad(x, pads, n, float("-inf")), [0] * n
            fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[n - 1]
            return fn(x, kernel, strides, begin, dilations, ceil_mode=ceil)
        if not symmetric:
            raise NotImplementedError("AveragePool with asymmetric pads")
        fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[n - 1]
        return fn(x, kernel, strides, begin, ceil, bool(attrs.get("count_include_pad", 0)))
    return run


OPS["MaxPool"], OPS["AveragePool"] = _pool_fn("max"), _pool_fn("avg")


@op("Reshape")
def _reshape(inputs, attrs):
    x, shape = inputs[0], _ints(inputs[1])
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


@op("Flatten")
def _flatten(inputs, attrs):
    x = inputs[0]
    axis = int(attrs.get("axis", 1)) % max(x.dim(), 1)
    return x.reshape(int(torch.tensor(x.shape[:axis]).prod()), -1)


@op("Transpose")
def _transpose(inputs, attrs):
    x = inputs[0]
    perm = list(attrs.get("perm", list(reversed(range(x.dim())))))
    return x.permute(perm)


@op("Concat")
def _concat(inputs, attrs):
    return torch.cat([t for t in inputs if t is not None], dim=int(attrs["axis"]))


@op("Split")
def _split(inputs, attrs):
    x, axis = inputs[0], int(attrs.get("axis", 0))
    sizes = _ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else list(attrs.get("split", []))
    if not sizes:
        parts = int(attrs.get("num_outputs", 0)) or attrs["_outputs"]
        size = -(-x.shape[axis] // parts)
        return tuple(torch.split(x, size, dim=axis))
    return tuple(torch.split(x, sizes, dim=axis))


@op("Shape")
def _shape(inputs, attrs):
    dims = list(inputs[0].shape)
    start, end = attrs.get("start", 0), attrs.get("end", len(dims))
    return torch.tensor(dims[start:end], dtype=torch.int64, device=inputs[0].device)


@op("Size")
def _size(inputs, attrs):
    return torch.tensor(inputs[0].numel(), dtype=torch.int64)


@op("Gather")
def _gather(inputs, attrs):
    x, idx = inputs
    axis = int(attrs.get("axis", 0)) % x.dim()
    idx = idx.long()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = torch.index_select(x, axis, idx.reshape(-1))
    return out.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1:]))


@op("Unsqueeze")
def _unsqueeze(inputs, attrs):
    x = inputs[0]
    axes = _ints(inputs[1]) if len(inputs) > 1 else list(attrs["axes"])
    rank = x.dim() + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


@op("Squeeze")
def _squeeze(inputs, attrs):
    x = inputs[0]
    axes = _ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else list(attrs.get("axes", []))
    if not axes:
        return x.squeeze()
    for a in sorted((a % x.dim() for a in axes), reverse=True):
        x = x.squeeze(a)
    return x


@op("Slice")
def _slice(inputs, attrs):
    x = inputs[0]
    starts, ends = _ints(inputs[1]), _ints(inputs[2])
    axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
    steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for s, e, a, st in zip(starts, ends, axes, steps):
        size = x.shape[a]
        if st < 0:
            raise NotImplementedError("Slice with a negative step")
        s = max(0, min(size, s + size if s < 0 else s))
        e = max(0, min(size, e + size if e < 0 else e))
        index[a % x.dim()] = slice(s, e, st)
    return x[tuple(index)]


@op("Cast")
def _cast(inputs, attrs):
    return inputs[0].to(_DTYPES[int(attrs["to"])])


@op("Range")
def _range(inputs, attrs):
    start, limit, delta = (t.item() for t in inputs)
    return torch.arange(start, limit, delta, dtype=inputs[0].dtype, device=inputs[0].device)


@op("Expand")
def _expand(inputs, attrs):
    x, shape = inputs[0], _ints(inputs[1])
    return x.expand(torch.broadcast_shapes(x.shape, tuple(shape)))


@op("Where")
def _where(inputs, attrs):
    return torch.where(inputs[0].bool(), inputs[1], inputs[2])


@op("ConstantOfShape")
def _constant_of_shape(inputs, attrs):
    value = attrs.get("value")
    fill = torch.as_tensor(value).reshape(-1) if value is not None else torch.zeros(1)
    return torch.full(_ints(inputs[0]), fill[0].item(), dtype=fill.dtype, device=inputs[0].device)


@op("LayerNormalization")
def _layer_norm(inputs, attrs):
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    axis = int(attrs.get("axis", -1)) % x.dim()
    return F.layer_norm(x, list(x.shape[axis:]), scale, bias, float(attrs.get("epsilon", 1e-5)))


@op("BatchNormalization")
def _batch_norm(inputs, attrs):
    x, scale, bias, mean, var = inputs[:5]
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, float(attrs.get("epsilon", 1e-5)))


@op("Resize")
def _resize(inputs, attrs):
    x = inputs[0]
    scales = inputs[2] if len(inputs) > 2 and inputs[2] is not None and inputs[2].numel() else None
    sizes = inputs[3] if len(inputs) > 3 and inputs[3] is not None else None
    mode = attrs.get("mode", "nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    ctm = attrs.get("coordinate_transformation_mode", "half_pixel")
    ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
    size = _ints(sizes)[2:] if sizes is not None else None
    factor = [float(s) for s in scales.reshape(-1).tolist()[2:]] if scales is not None else None
    if mode == "nearest":
        nearest = attrs.get("nearest_mode", "round_prefer_floor")
        nearest = nearest.decode() if isinstance(nearest, bytes) else nearest
        if ctm == "asymmetric" and nearest == "floor":
            return F.interpolate(x, size=size, scale_factor=None if size else factor, mode="nearest")
        return F.interpolate(x, size=size, scale_factor=None if size else factor, mode="nearest-exact")
    if mode == "linear":
        torch_mode = ("linear", "bilinear", "trilinear")[x.dim() - 3]
        return F.interpolate(x, size=size, scale_factor=None if size else factor, mode=torch_mode,
                             align_corners=ctm == "align_corners")
    raise NotImplementedError(f"Resize mode {mode}")


@op("Pad")
def _pad(inputs, attrs):
    x, pads = inputs[0], _ints(inputs[1])
    value = float(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else 0.0
    mode = attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    n = x.dim()
    torch_pads: list[int] = []
    for i in reversed(range(n)):
        torch_pads += [pads[i], pads[i + n]]
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]
    return F.pad(x, torch_pads, mode=mode, value=value) if mode == "constant" else F.pad(x, torch_pads, mode=mode)


@op("Tile")
def _tile(inputs, attrs):
    return inputs[0].repeat(_ints(inputs[1]))


@op("ArgMax")
def _argmax(inputs, attrs):
    return torch.argmax(inputs[0], dim=int(attrs.get("axis", 0)), keepdim=bool(attrs.get("keepdims", 1)))


@op("GatherND")
def _gather_nd(inputs, attrs):
    data, indices = inputs[0], inputs[1].long()
    b = int(attrs.get("batch_dims", 0))
    k = indices.shape[-1]
    batch = int(torch.tensor(data.shape[:b]).prod()) if b else 1
    flat = data.reshape(batch, *data.shape[b:])
    idx = indices.reshape(batch, -1, k)
    sizes = torch.tensor(data.shape[b:b + k])
    idx = torch.where(idx < 0, idx + sizes, idx)
    rows = torch.arange(batch).reshape(batch, 1).expand(batch, idx.shape[1])
    out = flat[(rows, *[idx[..., i] for i in range(k)])]
    return out.reshape(*indices.shape[:-1], *data.shape[b + k:])


def lstm(x: torch.Tensor, w_t: torch.Tensor, r_t: torch.Tensor, b: torch.Tensor | None, seq_lens: torch.Tensor | None,
         h0: torch.Tensor | None, c0: torch.Tensor | None, p: torch.Tensor | None, attrs: dict,
         quantize: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
    """ONNX LSTM (layout 0, the default activations) with the weights read transposed: ``w_t``
    [D, I, 4H], ``r_t`` [D, H, 4H], gates in ONNX's order i, o, f, c. ``quantize``: applied to X
    (the whole sequence, one GEMM) and to the hidden state before each step's GEMM, as
    onnxruntime's DynamicQuantizeLSTM quantizes them at run time. Returns Y [T, D, N, H], Y_h, Y_c."""
    if int(attrs.get("layout", 0)) != 0 or attrs.get("clip") is not None or int(attrs.get("input_forget", 0)):
        raise NotImplementedError("LSTM with layout 1, clip or input_forget")
    acts = [a.decode() if isinstance(a, bytes) else str(a) for a in (attrs.get("activations") or [])]
    if any(a.lower() != want for a, want in zip(acts, ["sigmoid", "tanh", "tanh"] * 2)):
        raise NotImplementedError(f"LSTM activations {acts}")
    steps, batch = x.shape[0], x.shape[1]
    if seq_lens is not None and bool(torch.any(seq_lens.reshape(-1) != steps)):
        raise NotImplementedError("LSTM with sequence_lens shorter than the sequence")
    hidden = r_t.shape[1]
    direction = attrs.get("direction", "forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    xq = quantize(x) if quantize is not None else x
    ys, hs, cs = [], [], []
    for d in range(w_t.shape[0]):
        gx = torch.matmul(xq, w_t[d])
        if b is not None:
            gx = gx + b[d, :4 * hidden] + b[d, 4 * hidden:]
        h = h0[d] if h0 is not None else x.new_zeros(batch, hidden)
        c = c0[d] if c0 is not None else x.new_zeros(batch, hidden)
        pi, po, pf = (p[d].split(hidden) if p is not None else (None, None, None))
        out: list[torch.Tensor | None] = [None] * steps
        reverse = direction == "reverse" or (direction == "bidirectional" and d == 1)
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            hq = quantize(h) if quantize is not None else h
            i, o, f, g = (gx[t] + torch.matmul(hq, r_t[d])).split(hidden, dim=-1)
            if pi is not None:
                i, f = i + pi * c, f + pf * c
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o + po * c if po is not None else o) * torch.tanh(c)
            out[t] = h
        ys.append(torch.stack(out))
        hs.append(h)
        cs.append(c)
    return torch.stack(ys, dim=1), torch.stack(hs), torch.stack(cs)


@op("LSTM")
def _lstm(inputs, attrs):
    x, w, r = inputs[0], inputs[1], inputs[2]
    rest = list(inputs[3:8]) + [None] * (8 - len(inputs))
    return lstm(x, w.transpose(1, 2), r.transpose(1, 2), *rest[:5], attrs)
