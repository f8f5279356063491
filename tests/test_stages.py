"""The quantize pipeline as stages (issue 11): each stage callable on its own, ``build_variant``
the unit a search repeats, the mode table the one place modes are listed."""

from __future__ import annotations

import inspect

import numpy as np
import onnx
import onnx_ir as ir
import pytest

import edgeq
from edgeq.config import MODES, QuantConfig, default_mode
from edgeq.io import model_bytes
from ortutil import op_types, run_ort
from passes.nets import conv_net, feeds, mlp_net


def _bytes(model: ir.Model) -> bytes:
    return model_bytes(model)


def test_stages_by_hand_give_the_same_model_as_quantize():
    """load -> prepare -> plan -> calibrate -> rewrite -> check -> report, called one by one,
    is what ``edgeq.quantize`` does for static mode: the same bytes, the same report sections."""
    from edgeq.stages.calibrate import calibrate
    from edgeq.stages.check import check
    from edgeq.stages.load import load, prepare
    from edgeq.stages.plan import plan
    from edgeq.stages.report import report
    from edgeq.stages.rewrite import rewrite

    config, data = QuantConfig(), feeds((1, 3, 16, 16), n=6)
    prepared = prepare(load(conv_net(), data), config)
    model = prepared.model
    planned = plan(model, config)
    assert planned.calibrated_roots(), "the plan names the activations calibration must range"
    table, info = calibrate(model, planned, config, prepared.data, None, progress=False)
    assert info["tensors"] == len(planned.calibrated_roots()) and info["num_samples"] == 6
    activations, _ = planned.snapshot()
    rewrite(model, planned, config)
    check(model)
    section = report(model, planned, config, prepared, activations=activations, ranges_info=info, seconds=0.0)

    result = edgeq.quantize(conv_net(), config, data, progress=False)
    assert _bytes(model) == _bytes(result.model)
    assert section["quantized"] == result.report["quantized"] and section["float"] == result.report["float"]
    assert sorted(table) == sorted(result.ranges)


def test_build_variant_reuses_one_prepared_model_and_its_ranges():
    """Variants of one Prepared: no reload, no re-prepare, no calibration when the table covers
    every tensor (no data at all), the prepared model untouched, each a valid model."""
    from edgeq.stages.load import Prepared, load, prepare
    from edgeq.stages.variant import build_variant

    data = feeds((1, 3, 16, 16), n=4)
    whole = edgeq.quantize(conv_net(), QuantConfig(), data, progress=False)
    prepared = prepare(load(conv_net(), data), QuantConfig())
    before = _bytes(prepared.model)
    same = build_variant(Prepared.of(prepared.model), QuantConfig(), whole.ranges)  # no data: the table covers it
    assert _bytes(same.model) == _bytes(whole.model)
    assert same.report["prepare"] == [] and same.source is None  # Prepared.of: nothing to report from before
    with pytest.raises(edgeq.UsageError, match="ranges table lacks"):  # no data to fill a gap with
        build_variant(Prepared.of(prepared.model), QuantConfig(), type(whole.ranges)({}, method="minmax"))
    conv = next(n.name for n in prepared.model.graph if n.op_type == "Conv")
    # another scale grouping: the tensors the table lacks are calibrated on the prepared data
    fewer = build_variant(prepared, QuantConfig().with_precision({conv: "fp32"}), whole.ranges)
    assert _bytes(prepared.model) == before, "build_variant works on a copy"
    assert op_types(fewer.model).count("QuantizeLinear") < op_types(same.model).count("QuantizeLinear")
    assert any(e["node"] == conv and "excluded" in e["reason"] for e in fewer.report["float"])
    assert set(whole.ranges) < set(fewer.ranges) and fewer.report["calibration"]["num_samples"] == 4
    onnx.checker.check_model(ir.to_proto(fewer.model))


def test_fp16_variant_is_the_fp16_mode_model():
    from edgeq.stages.fp16 import build_fp16_variant
    from edgeq.stages.load import load, prepare

    config = QuantConfig(mode="fp16")
    variant = build_fp16_variant(prepare(load(mlp_net()), config), config)
    assert _bytes(variant.model) == _bytes(edgeq.quantize(mlp_net(), config, progress=False).model)
    assert "Cast" in op_types(variant.model)


def test_auto_builds_its_whole_model_fp16_candidate_through_the_stage(monkeypatch):
    """Where the provider has fp16 kernels auto adds 'fp16 (whole model)' to its candidates;
    that candidate is build_fp16_variant's model (timing faked: this machine has no GPU)."""
    import edgeq.auto.latency as latency
    from edgeq.auto import auto_quantize
    from edgeq.stages.fp16 import build_fp16_variant
    from edgeq.stages.load import Prepared

    monkeypatch.setattr(latency, "measure", lambda models, feed, **_: {n: 1.0 if n == "fp32" else 2.0 for n in models})
    data = feeds((1, 3, 16, 16), n=12)
    result = auto_quantize(conv_net(), data, min_sqnr=30.0, provider="cuda", progress=False)
    tried = result.report["auto"]["configurations"]
    assert any(t["name"] == "fp16 (whole model)" for t in tried), [t["name"] for t in tried]
    assert result.report["auto"]["chosen"] == "fp32"  # every candidate timed slower than fp32
    # the candidate is the fp16 stage applied to auto's prepared float model
    from edgeq.auto.workbench import prepare_float

    float_model, _ = prepare_float(conv_net(), QuantConfig(), None)
    fp16 = build_fp16_variant(Prepared.of(float_model), QuantConfig(mode="fp16"))
    assert np.allclose(run_ort(fp16.model, data[0])[0], run_ort(conv_net(), data[0])[0], atol=1e-2)


def test_mode_table_handlers_and_the_default_rule():
    """Every row resolves to a handler with quantize's signature; one default rule for the API
    and the CLI; the CLI offers exactly the table's modes."""
    from edgeq.cli.quantize import quantize as cli_quantize
    from edgeq.quantizer import handler

    wanted = {"model", "config", "data", "eval_data", "labels", "ranges", "progress"}
    for mode in MODES.values():
        assert set(inspect.signature(handler(mode)).parameters) == wanted, mode.name
    assert default_mode(has_data=True) == "auto"
    assert default_mode(has_data=True, has_ranges=True) == "static"
    assert default_mode(has_data=True, format="qoperator") == "static"
    assert default_mode(has_data=False) == "static"
    choice = next(p for p in cli_quantize.params if p.name == "mode").type
    assert list(choice.choices) == list(MODES)


@pytest.mark.parametrize("changes, error, text", [
    ({"mode": "dynamic", "weights": "int4"}, edgeq.UsageError, "int4 and per-block weights are weight-only or static"),
    ({"weights": "int4", "format": "qoperator"}, edgeq.UsageError, "QDQ format"),
    ({"granularity": "per-block:32"}, edgeq.UsageError, "per-block"),
    ({"mode": "weight-only", "granularity": "per-block:48"}, edgeq.UsageError, "power of two"),
    ({"mode": "dynamic", "format": "qoperator"}, edgeq.UsageError, "needs static mode"),
    ({"mode": "fp16", "format": "qoperator"}, edgeq.UsageError, "needs static mode"),
    ({"format": "qoperator", "activations": "int16"}, edgeq.UnsupportedError, "format qdq"),
    ({"format": "qoperator", "precision": {"c": "fp16"}}, edgeq.UnsupportedError, "format qdq"),
    ({"min_score": 0.9}, edgeq.UsageError, "min_score needs a metric"),
    ({"exclude": ("a",), "fp16_nodes": ("a",)}, edgeq.UsageError, "two precisions"),
    ({"precision": {"a": "int4"}}, edgeq.UsageError, "fp32, fp16, int16"),
])
def test_no_config_value_that_quantize_would_refuse(changes, error, text):
    """What no mode implements is refused when the config is built, not deep in a run."""
    with pytest.raises(error, match=text):
        QuantConfig(**changes)


def test_precision_is_one_ordered_map_and_the_old_lists_read_from_it():
    config = QuantConfig(exclude=("Softmax", "fc1"), int16_nodes=["c1"], fp16_nodes="c2")
    assert dict(config.precision) == {"Softmax": "fp32", "fc1": "fp32", "c1": "int16", "c2": "fp16"}
    assert config.exclude == ("Softmax", "fc1") and config.int16_nodes == ("c1",) and config.fp16_nodes == ("c2",)
    later = config.with_precision({"fc1": "int16"})  # a later entry replaces the earlier one
    assert later.precision["fc1"] == "int16" and later.exclude == ("Softmax",)
    assert config.replace(precision={"c1": "int16"}).precision == {"c1": "int16"}  # replaced whole
    assert config.replace(exclude=("z",)).exclude == ("Softmax", "fc1", "z")  # a shorthand adds
    again = QuantConfig.from_dict(config.to_dict())
    assert again == config and hash(again) == hash(config)
    assert QuantConfig.from_dict({"precision": {"x": "fp16"}, "exclude": ["y"]}).precision == {"x": "fp16", "y": "fp32"}


def test_modules_of_the_old_layout_are_gone():
    import importlib.util

    assert importlib.util.find_spec("edgeq.modes") is None
    import edgeq.quantizer

    assert not hasattr(edgeq.quantizer, "already_prepared")
