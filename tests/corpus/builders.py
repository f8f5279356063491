"""The robustness corpus: graphs as other tools write them, built in code with real-looking weights.

Each builder returns ``(onnx.ModelProto, feeds_fn)`` where ``feeds_fn(n, seed)`` gives ``n``
feeds (dict input name -> array). Weights are He-initialized and BatchNorm statistics are not
trivial, so SQNR after quantization is meaningful. ``big_external`` writes a model over 2 GB
with external data into a folder and returns its path instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from corpus._graph import GraphBuilder, bn_stats, he

__all__ = [
    "CORPUS",
    "paddle_style",
    "yolo_style",
    "mobilenetv3_block",
    "transformer_layer",
    "lstm_model",
    "if_loop",
    "old_torch_style",
    "tf_style",
    "big_external",
]

Feeds = list[dict[str, np.ndarray]]
FeedsFn = Callable[[int, int], Feeds]
F = TensorProto.FLOAT


def _image_feeds(name: str, channels: int, sizes: list[int], batch: int = 2) -> FeedsFn:
    def feeds(n: int, seed: int) -> Feeds:
        rng = np.random.default_rng(seed)
        out = []
        for i in range(n):
            size = sizes[i % len(sizes)]
            out.append({name: rng.standard_normal((batch, channels, size, size)).astype(np.float32)})
        return out

    return feeds


def _conv_bn_relu(b: GraphBuilder, rng, x: str, cin: int, cout: int, k: int, stride: int, tag: str) -> str:
    w = b.weight(f"{tag}.w_0", he(rng, cout, cin, k, k))
    y = b.op("Conv", [x, w], name=tag, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)
    scale, bias, mean, var = bn_stats(rng, cout)
    params = [b.weight(f"{tag}_bn.{p}", a) for p, a in zip(("w_0", "b_0", "w_1", "w_2"), (scale, bias, mean, var))]
    y = b.op("BatchNormalization", [y, *params], epsilon=1e-5, momentum=0.9)
    return b.op("Relu", [y])


def paddle_style(seed: int = 0) -> tuple[onnx.ModelProto, FeedsFn]:
    """Paddle2ONNX-like: opset 11, every weight a Constant node, Conv-BN-Relu, Squeeze, MatMul head."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder(constants=True)
    y = _conv_bn_relu(b, rng, "image", 3, 16, 3, 1, "conv2d_0")
    y = _conv_bn_relu(b, rng, y, 16, 32, 3, 2, "conv2d_1")
    y = _conv_bn_relu(b, rng, y, 32, 32, 3, 1, "conv2d_394")
    y = b.op("Dropout", [y], ratio=0.1)
    y = b.op("GlobalAveragePool", [y])
    y = b.op("Squeeze", [y], axes=[2, 3])  # opset 11: axes is an attribute
    w = b.weight("linear_0.w_0", he(rng, 32, 10, fan_in=32))
    bias = b.weight("linear_0.b_0", (rng.standard_normal(10) * 0.1).astype(np.float32))
    y = b.op("Add", [b.op("MatMul", [y, w]), bias])
    b.nodes.append(helper.make_node("Softmax", [y], ["save_infer_model/scale_0.tmp_0"], axis=1))
    model = b.model(
        "paddle_style",
        [helper.make_tensor_value_info("image", F, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("save_infer_model/scale_0.tmp_0", F, ["N", 10])],
        opset=11,
        ir_version=6,
    )
    return model, _image_feeds("image", 3, [32])


def _conv_silu(b: GraphBuilder, rng, x: str, cin: int, cout: int, k: int = 1, stride: int = 1, group: int = 1) -> str:
    w = b.weight(b.fresh("model.conv.weight"), he(rng, cout, cin // group, k, k))
    bias = b.weight(b.fresh("model.conv.bias"), (rng.standard_normal(cout) * 0.1).astype(np.float32))
    y = b.op("Conv", [x, w, bias], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=group)
    return b.op("Mul", [y, b.op("Sigmoid", [y])])  # SiLU as exported by torch


def _yolo_head(b: GraphBuilder, rng, x: str, cin: int, image: str) -> str:
    """Conv to 3*(5+2) channels, then Reshape to [N, 3, 7, h*w] with a shape computed from Shape."""
    w = b.weight(b.fresh("head.weight"), he(rng, 21, cin, 1, 1))
    y = b.op("Conv", [x, w], kernel_shape=[1, 1])
    batch = b.op("Slice", [b.op("Shape", [image]), b.init(b.fresh("c0"), np.array([0])), b.init(b.fresh("c1"), np.array([1]))])
    shape = b.op("Concat", [batch, b.init(b.fresh("dims"), np.array([3, 7, -1]))], axis=0)
    return b.op("Reshape", [y, shape])


def yolo_style(seed: int = 0) -> tuple[onnx.ModelProto, FeedsFn]:
    """YOLO-like detector, symbolic H and W: SiLU, Split, Concat, MaxPool (SPPF), Resize x2, two heads."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = "images"
    y = _conv_silu(b, rng, x, 3, 16, 3, 2)
    y = _conv_silu(b, rng, y, 16, 32, 3, 2)
    left, right = b.op("Split", [y, b.init("split_sizes", np.array([16, 16]))], n_out=2, axis=1)
    right = _conv_silu(b, rng, right, 16, 16, 3)
    c1 = _conv_silu(b, rng, b.op("Concat", [left, right], axis=1), 32, 32)
    y = b.op("MaxPool", [c1], kernel_shape=[2, 2], strides=[2, 2])
    y = _conv_silu(b, rng, y, 32, 64, 3)
    p1 = b.op("MaxPool", [y], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    p2 = b.op("MaxPool", [p1], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    c2 = _conv_silu(b, rng, b.op("Concat", [y, p1, p2], axis=1), 192, 64)
    up = b.op("Resize", [c2, "", b.init("up_scales", np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    y = _conv_silu(b, rng, b.op("Concat", [up, c1], axis=1), 96, 32)
    heads = [_yolo_head(b, rng, y, 32, x), _yolo_head(b, rng, c2, 64, x)]
    y = b.op("Transpose", [b.op("Concat", heads, axis=3)], perm=[0, 1, 3, 2])
    b.nodes.append(helper.make_node("Sigmoid", [y], ["output0"]))
    model = b.model(
        "yolo_style",
        [helper.make_tensor_value_info(x, F, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("output0", F, ["batch", 3, "anchors", 7])],
        opset=13,
        ir_version=7,
    )
    return model, _image_feeds(x, 3, [64, 96], batch=1)


def mobilenetv3_block(seed: int = 0) -> tuple[onnx.ModelProto, FeedsFn]:
    """MobileNetV3 inverted residual: 1x1 expand, depthwise 3x3, squeeze-excite, HardSwish."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()

    def conv_bn(x: str, cin: int, cout: int, k: int = 1, group: int = 1) -> str:
        w = b.weight(b.fresh("features.conv.weight"), he(rng, cout, cin // group, k, k))
        y = b.op("Conv", [x, w], kernel_shape=[k, k], pads=[k // 2] * 4, group=group)
        params = [b.init(b.fresh("features.bn"), a) for a in bn_stats(rng, cout)]
        return b.op("BatchNormalization", [y, *params])

    x = "input"
    stem = b.op("HardSwish", [conv_bn(x, 3, 16, 3)])
    y = b.op("HardSwish", [conv_bn(stem, 16, 64)])
    y = b.op("HardSwish", [conv_bn(y, 64, 64, 3, group=64)])
    s = b.op("GlobalAveragePool", [y])
    w1 = b.weight("se.fc1.weight", he(rng, 16, 64, 1, 1))
    b1 = b.weight("se.fc1.bias", np.full(16, 0.1, np.float32))
    s = b.op("Relu", [b.op("Conv", [s, w1, b1], kernel_shape=[1, 1])])
    w2 = b.weight("se.fc2.weight", he(rng, 64, 16, 1, 1))
    b2 = b.weight("se.fc2.bias", np.full(64, 0.5, np.float32))
    s = b.op("HardSigmoid", [b.op("Conv", [s, w2, b2], kernel_shape=[1, 1])], alpha=1 / 6, beta=0.5)
    y = b.op("Mul", [y, s])
    y = b.op("Add", [conv_bn(y, 64, 16), stem])
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])], axis=1)
    wc = b.weight("classifier.weight", he(rng, 10, 16))
    bc = b.weight("classifier.bias", (rng.standard_normal(10) * 0.1).astype(np.float32))
    b.nodes.append(helper.make_node("Gemm", [y, wc, bc], ["logits"], transB=1))
    model = b.model(
        "mobilenetv3_block",
        [helper.make_tensor_value_info(x, F, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", F, ["N", 10])],
        opset=14,
        ir_version=7,
    )
    return model, _image_feeds(x, 3, [32])


def transformer_layer(seed: int = 0, vocab: int = 100, d: int = 32, heads: int = 4) -> tuple[onnx.ModelProto, FeedsFn]:
    """One BERT-like layer: int64 ids + mask, Gather embeddings, LayerNorm, softmax attention, Erf GELU."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    dh, ff = d // heads, 4 * d

    def linear(x: str, cin: int, cout: int, tag: str) -> str:
        w = b.weight(f"{tag}.weight", he(rng, cin, cout, fan_in=cin))
        bias = b.weight(f"{tag}.bias", (rng.standard_normal(cout) * 0.02).astype(np.float32))
        return b.op("Add", [b.op("MatMul", [x, w]), bias])

    def layer_norm(x: str, tag: str) -> str:
        gamma = b.init(f"{tag}.weight", rng.uniform(0.8, 1.2, d).astype(np.float32))
        beta = b.init(f"{tag}.bias", (rng.standard_normal(d) * 0.05).astype(np.float32))
        return b.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-12)

    ids, mask = "input_ids", "attention_mask"
    tok = b.op("Gather", [b.init("embeddings.word", (rng.standard_normal((vocab, d)) * 0.5).astype(np.float32)), ids])
    seq = b.op("Gather", [b.op("Shape", [ids]), b.init("one", np.array(1))], axis=0)
    positions = b.op("Range", [b.init("zero", np.array(0)), seq, b.init("step", np.array(1))])
    pos = b.op("Gather", [b.init("embeddings.position", (rng.standard_normal((64, d)) * 0.1).astype(np.float32)), positions])
    h = layer_norm(b.op("Add", [tok, pos]), "embeddings.norm")

    split_heads = b.init("split_heads", np.array([0, 0, heads, dh]))
    q = b.op("Transpose", [b.op("Reshape", [linear(h, d, d, "attn.q"), split_heads])], perm=[0, 2, 1, 3])
    k = b.op("Transpose", [b.op("Reshape", [linear(h, d, d, "attn.k"), split_heads])], perm=[0, 2, 3, 1])
    v = b.op("Transpose", [b.op("Reshape", [linear(h, d, d, "attn.v"), split_heads])], perm=[0, 2, 1, 3])
    scores = b.op("Mul", [b.op("MatMul", [q, k]), b.init("inv_sqrt_dh", np.array(1 / np.sqrt(dh), np.float32))])
    keep = b.op("Cast", [mask], to=F)
    bias = b.op("Mul", [b.op("Sub", [b.init("fone", np.array(1.0, np.float32)), keep]), b.init("neg", np.array(-1e4, np.float32))])
    bias = b.op("Unsqueeze", [bias, b.init("mask_axes", np.array([1, 2]))])
    probs = b.op("Softmax", [b.op("Add", [scores, bias])], axis=-1)
    ctx = b.op("Transpose", [b.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    ctx = b.op("Reshape", [ctx, b.init("merge_heads", np.array([0, 0, d]))])
    h = layer_norm(b.op("Add", [linear(ctx, d, d, "attn.out"), h]), "attn.norm")
    up = linear(h, d, ff, "ffn.up")
    erf = b.op("Erf", [b.op("Div", [up, b.init("sqrt2", np.array(np.sqrt(2.0), np.float32))])])
    gelu = b.op("Mul", [b.op("Mul", [up, b.op("Add", [erf, b.init("one_f", np.array(1.0, np.float32))])]), b.init("half", np.array(0.5, np.float32))])
    out = b.op("Add", [linear(gelu, ff, d, "ffn.down"), h])
    gamma = b.init("out.norm.weight", rng.uniform(0.8, 1.2, d).astype(np.float32))
    beta = b.init("out.norm.bias", (rng.standard_normal(d) * 0.05).astype(np.float32))
    b.nodes.append(helper.make_node("LayerNormalization", [out, gamma, beta], ["last_hidden_state"], axis=-1, epsilon=1e-12))
    model = b.model(
        "transformer_layer",
        [
            helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info(mask, TensorProto.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("last_hidden_state", F, ["batch", "sequence", d])],
        opset=17,
        ir_version=8,
    )

    def feeds(n: int, seed: int) -> Feeds:
        r = np.random.default_rng(seed)
        out = []
        for i in range(n):
            length = (8, 12)[i % 2]
            m = np.ones((2, length), np.int64)
            m[1, length - 3 :] = 0
            out.append({ids: r.integers(0, vocab, (2, length), dtype=np.int64), mask: m})
        return out

    return model, feeds


def lstm_model(seed: int = 0, hidden: int = 16, features: int = 8) -> tuple[onnx.ModelProto, FeedsFn]:
    """LSTM over a sequence [S, N, 8] with a Gemm head on the last hidden state."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    w = b.init("lstm.W", he(rng, 1, 4 * hidden, features, fan_in=features))
    r = b.init("lstm.R", he(rng, 1, 4 * hidden, hidden, fan_in=hidden) * 0.5)
    bias = b.init("lstm.B", (rng.standard_normal((1, 8 * hidden)) * 0.1).astype(np.float32))
    _, yh = b.op("LSTM", ["sequence", w, r, bias], n_out=2, hidden_size=hidden)
    last = b.op("Squeeze", [yh, b.init("axis0", np.array([0]))])
    wh = b.init("head.weight", he(rng, 5, hidden))
    bh = b.init("head.bias", (rng.standard_normal(5) * 0.1).astype(np.float32))
    b.nodes.append(helper.make_node("Gemm", [last, wh, bh], ["scores"], transB=1))
    model = b.model(
        "lstm_model",
        [helper.make_tensor_value_info("sequence", F, ["steps", "N", features])],
        [helper.make_tensor_value_info("scores", F, ["N", 5])],
        opset=14,
        ir_version=7,
    )

    def feeds(n: int, seed: int) -> Feeds:
        g = np.random.default_rng(seed)
        return [{"sequence": g.standard_normal(((6, 10)[i % 2], 2, features)).astype(np.float32)} for i in range(n)]

    return model, feeds


def if_loop(seed: int = 0) -> tuple[onnx.ModelProto, FeedsFn]:
    """An If whose branches hold Conv (one with a Constant weight) and a Loop whose body holds MatMul."""
    rng = np.random.default_rng(seed)
    main = GraphBuilder()
    x = "x"
    cond = main.op("Greater", [main.op("ReduceMean", [x], keepdims=0), main.init("zero", np.array(0.0, np.float32))])
    conv_out = helper.make_tensor_value_info("branch_out", F, None)

    then_b = GraphBuilder(constants=True)
    wt = then_b.weight("then.conv.weight", he(rng, 4, 4, 3, 3))
    then_b.nodes.append(helper.make_node("Conv", [x, wt], ["branch_out"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    else_b = GraphBuilder()
    we = main.init("else.conv.weight", he(rng, 4, 4, 3, 3))
    y = else_b.op("Conv", [x, else_b.op("Identity", [we])], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    else_b.nodes.append(helper.make_node("Relu", [y], ["branch_out"]))
    y = main.op(
        "If",
        [cond],
        then_branch=then_b.graph("then", [], [conv_out]),
        else_branch=else_b.graph("else", [], [conv_out]),
    )
    state = main.op("Flatten", [y], axis=1)

    body = GraphBuilder(constants=True)
    wl = body.weight("loop.weight", he(rng, 256, 256, fan_in=256) * 0.7)
    s = body.op("Relu", [body.op("MatMul", ["s_in", wl])])
    body.nodes.append(helper.make_node("Identity", [s], ["s_out"]))
    body.nodes.append(helper.make_node("Identity", ["c_in"], ["c_out"]))
    body_graph = body.graph(
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s_in", F, None),
        ],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), helper.make_tensor_value_info("s_out", F, None)],
    )
    trips = main.init("trips", np.array(2, np.int64))
    keep_going = main.init("true", np.array(True))
    state = main.op("Loop", [trips, keep_going, state], body=body_graph)
    wh = main.init("head.weight", he(rng, 256, 10, fan_in=256))
    main.nodes.append(helper.make_node("MatMul", [state, wh], ["logits"]))
    model = main.model(
        "if_loop",
        [helper.make_tensor_value_info(x, F, ["N", 4, 8, 8])],
        [helper.make_tensor_value_info("logits", F, ["N", 10])],
        opset=13,
        ir_version=7,
    )
    return model, _image_feeds(x, 4, [8])


def old_torch_style(seed: int = 0) -> tuple[onnx.ModelProto, FeedsFn]:
    """An old torch exporter's model: opset 9, IR 3, every initializer also a graph input,
    Conv-BN-Relu, Upsample (opset 9), MaxPool, Dropout, Flatten and Gemm(transB=1)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    w = b.init("0.weight", he(rng, 8, 3, 3, 3))
    y = b.op("Conv", ["input.1", w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    params = [b.init(f"1.{p}", a) for p, a in zip(("weight", "bias", "running_mean", "running_var"), bn_stats(rng, 8))]
    y = b.op("Relu", [b.op("BatchNormalization", [y, *params], epsilon=1e-5)])
    y = b.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    y = b.op("Upsample", [y, b.init("scales", np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    y = b.op("Dropout", [y], ratio=0.5)
    y = b.op("Flatten", [y], axis=1)
    wf = b.init("fc.weight", he(rng, 10, 8 * 16 * 16))
    bf = b.init("fc.bias", (rng.standard_normal(10) * 0.1).astype(np.float32))
    b.nodes.append(helper.make_node("Gemm", [y, wf, bf], ["output"], transB=1))
    inputs = [helper.make_tensor_value_info("input.1", F, ["batch", 3, 16, 16])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in b.initializers]
    model = b.model("old_torch_style", inputs, [helper.make_tensor_value_info("output", F, ["batch", 10])], opset=9, ir_version=3)

    def feeds(n: int, seed: int) -> Feeds:
        g = np.random.default_rng(seed)
        return [{"input.1": g.standard_normal((4, 3, 16, 16)).astype(np.float32)} for _ in range(n)]

    return model, feeds


def tf_style(seed: int = 0) -> tuple[onnx.ModelProto, FeedsFn]:
    """A tf2onnx-like model: NHWC input with Transposes around the convs, weights behind
    Identity nodes, bias as a separate Add, ReLU6 as Clip, BatchNormalization, names with ':0'."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()

    def ident(name: str, array: np.ndarray) -> str:
        return b.op("Identity", [b.init(f"{name}/ReadVariableOp:0", array)], name=f"{name}/ReadVariableOp")

    y = b.op("Transpose", ["input_1:0"], perm=[0, 3, 1, 2], name="model/conv2d/Conv2D__6")
    w = ident("model/conv2d/Conv2D", he(rng, 16, 3, 3, 3))
    y = b.op("Conv", [y, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], name="model/conv2d/Conv2D")
    y = b.op("Add", [y, b.init("model/conv2d/BiasAdd/ReadVariableOp:0", (rng.standard_normal((1, 16, 1, 1)) * 0.1).astype(np.float32))])
    y = b.op("Clip", [y, b.init("zero:0", np.array(0.0, np.float32)), b.init("six:0", np.array(6.0, np.float32))])
    w = ident("model/conv2d_1/Conv2D", he(rng, 32, 16, 3, 3))
    y = b.op("Conv", [y, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="model/conv2d_1/Conv2D")
    params = [ident(f"model/bn/{k}", a) for k, a in zip(("gamma", "beta", "mean", "var"), bn_stats(rng, 32))]
    y = b.op("BatchNormalization", [y, *params], epsilon=1e-3, name="model/bn/FusedBatchNormV3")
    y = b.op("Clip", [y, "zero:0", "six:0"])
    y = b.op("Transpose", [y], perm=[0, 2, 3, 1], name="model/conv2d_1/Conv2D__20")
    y = b.op("ReduceMean", [y], axes=[1, 2], keepdims=0, name="model/global_average_pooling2d/Mean")
    w = ident("model/dense/MatMul", he(rng, 32, 10, fan_in=32))
    y = b.op("Add", [b.op("MatMul", [y, w]), ident("model/dense/BiasAdd", (rng.standard_normal(10) * 0.1).astype(np.float32))])
    b.nodes.append(helper.make_node("Softmax", [y], ["dense:0"], axis=-1, name="model/dense/Softmax"))
    model = b.model(
        "tf_style",
        [helper.make_tensor_value_info("input_1:0", F, ["unk__12", 32, 32, 3])],
        [helper.make_tensor_value_info("dense:0", F, ["unk__13", 10])],
        opset=13,
        ir_version=7,
    )

    def feeds(n: int, seed: int) -> Feeds:
        g = np.random.default_rng(seed)
        return [{"input_1:0": g.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)} for _ in range(n)]

    return model, feeds


def big_external(folder: str, n_weights: int = 9, size: int = 8192) -> tuple[str, FeedsFn]:
    """A model over 2 GB: ``n_weights`` MatMul weights [size, size] of one constant value, opset 11.

    The data file is written chunk by chunk, so building never holds more than one row block.
    Returns the model's path.
    """
    os.makedirs(folder, exist_ok=True)
    data_name = "big_external.onnx.data"
    row_block = np.full((512, size), 1.0 / size, np.float32)
    b = GraphBuilder()
    y = "x"
    offset = 0
    with open(os.path.join(folder, data_name), "wb") as f:
        for i in range(n_weights):
            tensor = TensorProto(name=f"w{i}", data_type=F, dims=[size, size])
            tensor.data_location = TensorProto.EXTERNAL
            length = size * size * 4
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(length))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            for _ in range(size // row_block.shape[0]):
                f.write(row_block.tobytes())
            offset += length
            b.initializers.append(tensor)
            y = b.op("Relu", [b.op("Add", [b.op("MatMul", [y, f"w{i}"]), b.init(f"b{i}", np.array([0.01 * (i + 1)], np.float32))])])
    b.nodes.append(helper.make_node("Identity", [y], ["y"]))
    model = b.model(
        "big_external",
        [helper.make_tensor_value_info("x", F, ["N", size])],
        [helper.make_tensor_value_info("y", F, ["N", size])],
        opset=11,
        ir_version=6,
    )
    path = os.path.join(folder, "big_external.onnx")
    onnx.save(model, path)

    def feeds(n: int, seed: int) -> Feeds:
        g = np.random.default_rng(seed)
        return [{"x": g.standard_normal((1, size)).astype(np.float32)} for _ in range(n)]

    return path, feeds


# name -> builder of (model, feeds_fn); big_external is separate (it writes files)
CORPUS: dict[str, Callable[[], tuple[onnx.ModelProto, FeedsFn]]] = {
    "paddle_style": paddle_style,
    "yolo_style": yolo_style,
    "mobilenetv3_block": mobilenetv3_block,
    "transformer_layer": transformer_layer,
    "lstm_model": lstm_model,
    "if_loop": if_loop,
    "old_torch_style": old_torch_style,
    "tf_style": tf_style,
}
