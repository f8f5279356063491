"""Auto mode with a size target (auto/size_fit.py) and the integer codebooks it stores int8
weights with (passes/integer_codebooks.py): int8 kernels kept after onnxruntime folds the
codebooks, the file within the limit, the promise checked again on every calibration sample,
and clear failures where the limit is out of reach or breaks the promise."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import edgeq
from edgeq.config import QuantConfig
from edgeq.errors import FidelityError, UsageError
from edgeq.io import model_bytes
from edgeq.metrics import sqnr_db
from edgeq.passes.codebook_weights import CodebookWeightsPass
from edgeq.passes.integer_codebooks import integer_compressible
from ortutil import int8_pays_timing, run_ort
from passes.helpers import ort_optimized_ops
from passes.nets import FOUR_CONVS, build, feeds


def _net() -> onnx.ModelProto:
    """Four Convs of different sensitivity and a head: int8 under auto, weights worth storing."""
    rng = np.random.default_rng(3)
    return build(FOUR_CONVS, {"W0": rng.normal(0, 0.3, (32, 3, 3, 3)), "B0": rng.normal(0, 0.1, 32),
       "W1": rng.normal(0, 0.08, (64, 32, 3, 3)), "B1": rng.normal(0, 0.1, 64),
       "W2": rng.normal(0, 0.05, (64, 64, 3, 3)), "B2": rng.normal(0, 0.1, 64),
       "W3": rng.normal(0, 0.2, (32, 64, 1, 1)), "B3": rng.normal(0, 0.1, 32),
       "G": rng.normal(0, 0.3, (10, 32)), "GB": rng.normal(0, 0.1, 10)})


def _optimized_ops(data: bytes, tmp_path) -> collections.Counter:
    return collections.Counter(ort_optimized_ops(data, tmp_path))


def _int8_model() -> ir.Model:
    result = edgeq.quantize(_net(), QuantConfig(mode="static"), feeds((1, 3, 16, 16), n=16), progress=False)
    return result.model


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_integer_codebooks_keep_the_int8_kernels_and_rebuild_what_they_say(bits, tmp_path):
    model = _int8_model()
    before = model_bytes(model)
    weights = integer_compressible(model.graph)
    assert len(weights) == 5 and all(not t for t in weights.values())  # four Convs and the Gemm (transB: not transposed)
    names = frozenset(v.name for v in weights)
    stored = CodebookWeightsPass("kmeans", bits, integer=True, only=names)
    stored(model)
    assert {layer["scheme"] for layer in stored.layers} == {"int"} and len(stored.layers) == 5
    ops = collections.Counter(n.op_type for n in model.graph)
    assert ops["GatherElements"] == 5 and ops["Cast"] == 2  # the unpacking's two (int32, int64): none of the codebooks
    assert all(n.inputs[0].const_value.dtype == ir.DataType.INT8 for n in model.graph if n.op_type == "GatherElements")
    after = model_bytes(model)
    # onnxruntime folds the codebooks and fuses the same int8 kernels as before
    assert _optimized_ops(after, tmp_path)["QLinearConv"] == _optimized_ops(before, tmp_path)["QLinearConv"] == 4
    test = feeds((1, 3, 16, 16), n=4, seed=9)
    got = [run_ort(after, f)[0] for f in test]
    if bits == 8:  # 256 entries hold every integer: the file computes what the int8 model did
        assert all(np.array_equal(a, run_ort(before, f)[0]) for a, f in zip(got, test))
        assert len(after) > len(before) * 0.9  # nothing saved at 8 bits: auto never picks it
    else:
        assert len(after) < len(before) * (0.75 if bits == 4 else 0.6)
        ref = np.concatenate([run_ort(before, f)[0] for f in test])
        assert sqnr_db(ref, np.concatenate(got)) > (12.0 if bits == 4 else 3.0)


def test_integer_codebooks_store_dynamic_matmul_weights_transposed():
    rng = np.random.default_rng(0)
    proto = build("""<ir_version: 8, opset_import: ["" : 17]>
g (float[N,64] x) => (float[N,48] y) {
  y = MatMul(x, M)
}""", {"M": rng.normal(0, 0.1, (64, 48))})
    result = edgeq.quantize(proto, QuantConfig(mode="dynamic"), progress=False)
    model, before = result.model, model_bytes(result.model)
    weights = integer_compressible(model.graph)
    assert len(weights) == 1 and list(weights.values()) == [True]  # grouped along N
    CodebookWeightsPass("kmeans", 8, integer=True, only=frozenset(v.name for v in weights))(model)
    assert any(n.op_type == "Transpose" for n in model.graph)
    x = {"x": rng.normal(0, 1, (4, 64)).astype(np.float32)}
    assert np.array_equal(run_ort(model_bytes(model), x)[0], run_ort(before, x)[0])  # 8 bits: exact


@pytest.mark.parametrize("answer", ["int8", "fp32"])
def test_the_rebuilt_weights_auto_judges_are_what_the_stored_file_computes(answer):
    from edgeq.auto.size_store import apply_plan, candidates, rebuilt_model

    model = _int8_model() if answer == "int8" else ir.from_proto(_net())
    plan = {v.name: bits for v, bits in zip(candidates(model), (4, 3, 6, 2, 5))}
    assert len(plan) == 5
    cache: dict = {}
    stored, judged = model_bytes(apply_plan(model, plan, cache)), model_bytes(rebuilt_model(model, plan, cache))
    assert len(judged) > len(stored)  # the weights written out: bigger, and nothing to unpack at load
    for feed in feeds((1, 3, 16, 16), n=3, seed=4):
        assert np.array_equal(run_ort(stored, feed)[0], run_ort(judged, feed)[0])


@pytest.fixture
def int8_pays(monkeypatch):
    from edgeq.auto import latency

    monkeypatch.setattr(latency, "measure", int8_pays_timing)  # this 0.1 ms net's real timings are noise


def _auto(max_size: str, min_sqnr: float = 15.0):
    """(random weights: no top-1 guard, their class scores are near ties)"""
    return edgeq.quantize(_net(), QuantConfig(mode="auto", max_size=max_size, min_sqnr=min_sqnr, min_top1=0.0),
                          feeds((1, 3, 16, 16), n=32), progress=False)


def test_auto_fits_the_file_keeps_the_promise_and_the_int8_kernels(int8_pays, tmp_path):
    plain = edgeq.quantize(_net(), QuantConfig(mode="auto", min_sqnr=15.0, min_top1=0.0), feeds((1, 3, 16, 16), n=32),
                           progress=False)
    searched = len(model_bytes(plain.model))
    limit = 0.8 * searched
    result = _auto(f"{limit / 1e6:.6f}")
    size = result.report["auto"]["size"]
    data = model_bytes(result.model)
    assert len(data) <= limit and size["bytes"] == len(data) and size["answer_bytes"] == searched
    assert size["stored"] == "codebooks" and size["plan"] and all(2 <= b <= 8 for b in size["plan"].values())
    assert size["check"]["bound_db"] >= 15.0 and size["check"]["samples"] == 32
    summary, plain_summary = result.report["summary"], plain.report["summary"]
    assert summary["size_after_bytes"] < plain_summary["size_after_bytes"] and summary["size_ratio"] < plain_summary["size_ratio"]
    assert set(size["ms"]) == set(size["load_ms"]) == {"fp32", "searched", "stored"}
    assert "stored in" in result.report["auto"]["verdict"] and "--max-size" in result.report["auto"]["verdict"]
    assert _optimized_ops(data, tmp_path)["QLinearConv"] == _optimized_ops(model_bytes(plain.model), tmp_path)["QLinearConv"]
    from edgeq.auto.render import auto_html, auto_markdown

    markdown, page = auto_markdown(result.report), auto_html(result.report)
    assert "## Size target" in markdown and f"{size['bytes'] / 1e6:.3f} MB" in markdown and "Size target" in page
    # the promise on samples the search never saw
    unseen = feeds((1, 3, 16, 16), n=32, seed=77)
    ref = np.concatenate([run_ort(_net(), f)[0] for f in unseen])
    assert sqnr_db(ref, np.concatenate([run_ort(data, f)[0] for f in unseen])) >= 15.0


def test_auto_smallest_file_that_keeps_the_promise(int8_pays):
    result = _auto("min")
    size = result.report["auto"]["size"]
    data = model_bytes(result.model)
    assert size["stored"] == "codebooks" and size["bytes"] == len(data) < 0.8 * size["answer_bytes"]
    assert size["check"]["bound_db"] >= 15.0 and size["limit_bytes"] == 0
    # well below it (0.6x) the promise breaks: the bisection went down to the edge the promise sets
    with pytest.raises(FidelityError, match="breaks auto's fidelity promise"):
        _auto(f"{0.6 * len(data) / 1e6:.6f}")


def test_auto_size_target_checked_on_the_evaluation_samples_given(int8_pays):
    result = edgeq.quantize(_net(), QuantConfig(mode="auto", max_size="min", min_sqnr=15.0, min_top1=0.0),
                            feeds((1, 3, 16, 16), n=16), eval_data=feeds((1, 3, 16, 16), n=12, seed=5), progress=False)
    size = result.report["auto"]["size"]
    assert size["check"]["samples"] == 12 and size["check"]["bound_db"] >= 15.0
    assert "evaluation samples" in result.report["auto"]["verdict"]


def test_auto_within_the_limit_as_searched_changes_no_weight(int8_pays):
    result = _auto("100")  # 100 MB
    size = result.report["auto"]["size"]
    assert size["stored"].startswith("as searched") and "plan" not in size


def test_auto_size_limits_out_of_reach_or_breaking_the_promise_fail_clearly(int8_pays):
    with pytest.raises(UsageError, match="cannot be met: with every weight at 2 bits"):
        _auto("0.001")  # 1 KB
    with pytest.raises(FidelityError, match=r"breaks auto.s fidelity promise: .* bound .* < 35 dB .*(smallest file found|no smaller file found)"):
        _auto("8x", min_sqnr=35.0)


def test_size_target_config_rules_in_auto_mode():
    assert QuantConfig(mode="auto", max_size="6x").weights == "int8"
    with pytest.raises(UsageError, match="drop --weights"):
        QuantConfig(mode="auto", max_size="6x", weights="kmeans:4")
    with pytest.raises(UsageError, match="compress mode's .* or auto mode's"):
        QuantConfig(mode="static", max_size="6x")
    with pytest.raises(UsageError, match="drop --format qoperator"):
        QuantConfig(mode="auto", max_size="6x", format="qoperator")
    assert QuantConfig(mode="auto", max_size="MIN").max_size == "min"
    from edgeq.config import default_mode

    assert default_mode(has_data=True, max_size="min") == "auto" and default_mode(has_data=True, max_size="6x") == "compress"
    with pytest.raises(UsageError, match="--max-size min .* is auto mode's"):
        QuantConfig(mode="compress", max_size="min")


def test_cli_auto_size_target_writes_nothing_where_the_promise_breaks(int8_pays, tmp_path, capsys):
    from edgeq.cli.main import main

    model, calib = tmp_path / "m.onnx", tmp_path / "calib"
    onnx.save(_net(), model)
    calib.mkdir()
    for i, feed in enumerate(feeds((1, 3, 16, 16), n=32)):
        np.savez(calib / f"{i:03d}.npz", **feed)
    out = tmp_path / "small.onnx"
    with pytest.raises(SystemExit) as e:
        main(["quantize", str(model), "-o", str(out), "--calib", str(calib), "--mode", "auto", "--max-size", "8x",
              "--min-sqnr", "35"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "breaks auto's fidelity promise" in err and "Traceback" not in err
    assert not out.exists()
