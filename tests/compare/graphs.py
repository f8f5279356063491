"""Small test graphs built from ONNX text with seeded random weights (shared by compare/gpu tests)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser

__all__ = ["with_weights", "conv_net", "transformer_block", "conv_feeds", "transformer_feeds"]


def with_weights(text: str, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Parse ONNX text and attach ``weights`` as initializers; the model is checked."""
    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in weights.items())
    onnx.checker.check_model(model, full_check=True)
    return model


def conv_net(seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-Relu-Conv-Relu-GlobalAveragePool-Flatten-Gemm on 1x3x32x32, 10 logits."""
    rng = np.random.default_rng(seed)
    he = lambda *s: (rng.standard_normal(s) * np.sqrt(2.0 / np.prod(s[1:]))).astype(np.float32)  # noqa: E731
    text = """
    <ir_version: 9, opset_import: ["" : 17]>
    convnet (float[N, 3, 32, 32] x) => (float[N, 10] logits) {
        c1 = Conv <pads = [1, 1, 1, 1], strides = [2, 2]> (x, w1, b1)
        n1 = BatchNormalization (c1, g1, be1, m1, v1)
        r1 = Relu (n1)
        c2 = Conv <pads = [1, 1, 1, 1], group = 16> (r1, w2, b2)
        r2 = Relu (c2)
        c3 = Conv (r2, w3, b3)
        r3 = Clip (c3, lo, hi)
        p = GlobalAveragePool (r3)
        f = Flatten (p)
        logits = Gemm <transB = 1> (f, wf, bf)
    }
    """
    weights = {
        "w1": he(16, 3, 3, 3), "b1": rng.standard_normal(16).astype(np.float32) * 0.1,
        "g1": (1 + 0.1 * rng.standard_normal(16)).astype(np.float32),
        "be1": (0.1 * rng.standard_normal(16)).astype(np.float32),
        "m1": (0.1 * rng.standard_normal(16)).astype(np.float32),
        "v1": (1 + 0.1 * rng.random(16)).astype(np.float32),
        "w2": he(16, 1, 3, 3), "b2": np.zeros(16, np.float32),
        "w3": he(32, 16, 1, 1), "b3": np.zeros(32, np.float32),
        "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32),
        "wf": he(10, 32), "bf": np.zeros(10, np.float32),
    }
    return with_weights(text, weights)


def conv_feeds(batch: int = 2, seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((batch, 3, 32, 32)).astype(np.float32)}


def transformer_block(seed: int = 0, vocab: int = 100, d: int = 32) -> onnx.ModelProto:
    """Embedding (int64 ids) + LayerNorm + single-head attention with a -1e9 mask + decomposed
    RMSNorm (Pow/ReduceMean/Sqrt) + Erf-GELU MLP + mean-pooled head: a transformer-like graph."""
    rng = np.random.default_rng(seed)
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32)  # noqa: E731
    text = """
    <ir_version: 9, opset_import: ["" : 17]>
    block (int64[B, T] ids, float[B, T] mask) => (float[B, 4] out) {
        e = Gather (emb, ids)
        ln = LayerNormalization <axis = -1, epsilon = 0.00001> (e, lng, lnb)
        q = MatMul (ln, wq)
        k = MatMul (ln, wk)
        v = MatMul (ln, wv)
        kt = Transpose <perm = [0, 2, 1]> (k)
        s0 = MatMul (q, kt)
        s1 = Div (s0, scale)
        inv = Sub (one, mask)
        neg = Mul (inv, big)
        neg3 = Unsqueeze (neg, ax1)
        s2 = Add (s1, neg3)
        a = Softmax <axis = -1> (s2)
        ctx = MatMul (a, v)
        o = MatMul (ctx, wo)
        h = Add (e, o)
        sq = Pow (h, two)
        ms = ReduceMean <axes = [-1]> (sq)
        mse = Add (ms, eps)
        rms = Sqrt (mse)
        hn = Div (h, rms)
        shp = Shape (hn)
        m1 = MatMul (hn, w1)
        g0 = Div (m1, sqrt2)
        g1 = Erf (g0)
        g2 = Add (g1, one)
        g3 = Mul (m1, g2)
        g4 = Mul (g3, half)
        m2 = MatMul (g4, w2)
        h2 = Add (hn, m2)
        h3 = Reshape (h2, shp)
        pooled = ReduceMean <axes = [1], keepdims = 0> (h3)
        out = MatMul (pooled, wh)
    }
    """
    weights = {
        "emb": rng.standard_normal((vocab, d)).astype(np.float32),
        "lng": np.ones(d, np.float32), "lnb": np.zeros(d, np.float32),
        "wq": w(d, d), "wk": w(d, d), "wv": w(d, d), "wo": w(d, d),
        "scale": np.array(np.sqrt(d), np.float32), "one": np.array(1.0, np.float32),
        "big": np.array(-1e9, np.float32), "ax1": np.array([1], np.int64),
        "two": np.array(2.0, np.float32), "eps": np.array(1e-6, np.float32),
        "sqrt2": np.array(np.sqrt(2.0), np.float32), "half": np.array(0.5, np.float32),
        "w1": w(d, 4 * d), "w2": w(4 * d, d), "wh": w(d, 4),
    }
    return with_weights(text, weights)


def transformer_feeds(batch: int = 2, tokens: int = 12, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, tokens), np.float32)
    mask[:, tokens - 3 :] = 0.0  # padding at the end
    return {"ids": rng.integers(0, 100, (batch, tokens)).astype(np.int64), "mask": mask}
