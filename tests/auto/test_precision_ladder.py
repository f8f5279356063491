"""Auto mode's precision ladder (int8 -> int16 activations / fp16 -> fp32): a layer that int8
cannot keep faithful but int16 can; picked where it measures fastest, reported with why."""

from __future__ import annotations

import numpy as np
import onnx

from edgeq.metrics import sqnr_db
from ortutil import run_ort

NET = """<ir_version: 8, opset_import: ["" : 17]>
ladder_net (float[N,8,12,12] x) => (float[N,10] y) {
  c0 = Conv<pads=[1,1,1,1]>(x, W0, B0)
  r0 = Relu(c0)
  c1 = Conv<pads=[1,1,1,1]>(r0, W1, B1)
  r1 = Relu(c1)
  c2 = Conv<pads=[1,1,1,1]>(r1, W2, B2)
  g = GlobalAveragePool(c2)
  y = Flatten(g)
}"""


def ladder_net() -> onnx.ModelProto:
    """c0's output channels 0-7 read only x's channel 0, which spans +-300 (scaled down by their
    weights); channels 8-15 read the N(0, 1) channels 1-7. One int8 scale for x cannot serve
    both (min/max loses the small channels, clipping loses the wide one): int8 misses 30 dB on
    c0 whatever the range method, int16 activations (same int8 weights) do not."""
    rng = np.random.default_rng(0)
    model = onnx.parser.parse_model(NET)
    for node in model.graph.node:
        node.name = node.output[0]
    w0 = rng.normal(0, 0.25, (16, 8, 3, 3))
    w0[:8, 1:], w0[8:, 0] = 0.0, 0.0
    w0[:8, 0] *= 0.01
    weights = {"W0": w0, "B0": rng.normal(0, 0.1, 16), "W1": rng.normal(0, 0.15, (16, 16, 3, 3)),
               "B1": rng.normal(0, 0.1, 16), "W2": rng.normal(0, 0.1, (10, 16, 3, 3)), "B2": rng.normal(0, 0.1, 10)}
    for name, array in weights.items():
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(array, np.float32), name))
    onnx.checker.check_model(model)
    return model


def ladder_feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.normal(0, 1, (1, 8, 12, 12)).astype(np.float32)
        x[0, 0] = rng.uniform(-300.0, 300.0, (12, 12))
        out.append({"x": x})
    return out


EVAL = ladder_feeds(8, 5)


def _fake_measure(models, feed, *, provider="cpu", threads=1, **_):
    """Latency as if int16 Q/DQ and fp16 ran on integer/fp16 hardware: faster than fp32 there,
    each int16 Q costing 0.2 ms and each Cast into fp16 0.1 ms."""
    out = {}
    for name, data in models.items():
        proto = data.proto() if hasattr(data, "proto") else onnx.load_from_string(data)  # InMemoryModel or bytes
        cost = sum(0.2 if n.domain == "com.microsoft" and n.op_type == "QuantizeLinear" else
                   0.1 if n.op_type == "Cast" and n.attribute[0].i == 10 else 0.0 for n in proto.graph.node)
        out[name] = 3.0 if name == "fp32" else (1.0 + cost if cost else 2.0)
    return out


def _auto(provider: str = "cpu"):
    from edgeq.auto import auto_quantize

    return auto_quantize(ladder_net(), ladder_feeds(16, 1), eval_data=EVAL, min_sqnr=30.0, provider=provider,
                         progress=False)


def _sqnr(model) -> float:
    ref = np.concatenate([run_ort(ladder_net(), f)[0] for f in EVAL])
    return sqnr_db(ref, np.concatenate([run_ort(model, f)[0] for f in EVAL]))


def _layer(auto, name):
    return next(e for e in auto["layers"] if e["node"] == name)


def test_ladder_picks_int16_where_int8_fails_and_int16_meets(monkeypatch):
    import edgeq.auto.latency as latency

    monkeypatch.setattr(latency, "measure", _fake_measure)
    result = _auto()
    auto = result.report["auto"]
    assert all(c["min_sqnr_db"] < 30.0 for c in auto["configurations"] if c["name"].startswith("int8 uniform"))
    c0 = _layer(auto, "c0")
    assert c0["precision"] == "int16", c0
    assert "with it int8 the target fails" in c0["why"] and "in int16 activations it holds" in c0["why"]
    assert "sensitivity rank 1 of 3" in c0["why"]
    assert {_layer(auto, n)["precision"] for n in ("c1", "c2")} == {"int8"}
    # int16 Q/DQ exactly on c0's input (its Relu-folded output is read by int8 c1 only)
    int16_q = [n for n in result.model.graph if n.op_type == "QuantizeLinear" and n.outputs[0].dtype.value == 5]
    assert [n.inputs[0].name for n in int16_q] == ["x"]
    assert [c.name for n in result.model.graph if n.op_type == "DequantizeLinear" and n.inputs[0].producer() in int16_q
            for c in n.outputs[0].consumers()] == ["c0"]
    assert _sqnr(result.model) >= 30.0  # checked independently on the eval feeds
    assert auto["fidelity"]["min_sqnr_db"] >= 30.0


def test_ladder_with_measured_cpu_timing_keeps_int16_only_if_faster():
    result = _auto()
    auto = result.report["auto"]
    tried = {c["name"]: c for c in auto["configurations"]}
    int16 = [c for name, c in tried.items() if "in int16 activations" in name and c["meets_target"]]
    assert int16, list(tried)  # the ladder found an int16 configuration meeting the target
    chosen = tried[auto["chosen"]]
    assert chosen["meets_target"] and _sqnr(result.model) >= 30.0
    if not auto["verdict"].startswith("fp32"):
        assert chosen["latency_ms"] <= auto["fp32_latency_ms"]
    c0 = _layer(auto, "c0")
    if auto["verdict"].startswith("fp32"):  # nothing measured faster than fp32 (a loaded machine)
        assert c0["precision"] == "fp32" and c0["why"] == auto["verdict"]
    elif c0["precision"] == "int16":  # it measured fastest
        assert all(chosen["latency_ms"] <= c["latency_ms"] * 1.03 for c in tried.values() if c["meets_target"])
    else:  # fp32, saying that int16 met the target but lost on latency
        assert c0["precision"] == "fp32" and "int16 activations also met the target" in c0["why"], c0
    assert any("fp16 is not tried on the CPU provider" in n for n in auto["notes"])


def test_fp16_rung_first_where_the_provider_has_fp16_kernels(monkeypatch):
    import edgeq.auto.latency as latency
    from edgeq.auto.search import ladder

    assert ladder("cpu") == ("int8-per-token", "int16") and ladder("cuda") == ("fp16", "int16")
    assert ladder("cpu", "qoperator") == ("int16",)  # per-token quantizes at run time: QDQ format only
    monkeypatch.setattr(latency, "measure", _fake_measure)
    result = _auto(provider="cuda")  # fidelity is scored on CPU sessions; timing is faked
    auto = result.report["auto"]
    c0 = _layer(auto, "c0")
    assert c0["precision"] == "fp16" and "fp16 for fidelity" in c0["why"], c0
    assert "with it int8 the target fails" in c0["why"]
    casts = [n for n in result.model.graph if n.op_type == "Cast"]
    assert len(casts) == 2  # into and out of one fp16 region: from c0 to a Relu (r0, or r1 with c1 fp16 too)
    assert [c.name for c in casts[0].outputs[0].consumers()] == ["c0"]
    assert casts[1].inputs[0].producer().name in ("r0", "r1")
    assert _sqnr(result.model) >= 30.0


def test_summary_precisions_and_rendering(monkeypatch):
    import edgeq.auto.latency as latency
    from edgeq.auto.render import auto_markdown

    monkeypatch.setattr(latency, "measure", _fake_measure)
    report = _auto().report
    auto = report["auto"]
    assert {e["precision"] for e in auto["layers"]} <= {"int8", "int8-dynamic", "int16", "fp16", "fp32"}
    assert all(e["why"] for e in auto["layers"])
    page = auto_markdown(report)
    assert "| c0 | Conv | int16 | int16 activations (int8 weights) for fidelity" in page
    assert "Layers: 2 int8, 1 int16." in page
