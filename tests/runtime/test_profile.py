"""profile: per-op-type/node time from onnxruntime's profiler, Q/DQ share, the saved trace."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from rt_nets import conv_net, save

from edgeq.errors import UsageError
from edgeq.runtime import CPUOptions
from edgeq.runtime.profile import profile, summarize_trace


def test_conv_net_profile_and_trace(tmp_path):
    path = save(conv_net()[0], tmp_path / "net.onnx")
    result = profile(path, runs=5, warmup=2, batch=2)
    assert result.runs == 5 and result.providers == ("CPUExecutionProvider",)
    assert result.trace_path == str(tmp_path / "net.profile.json")
    events = json.load(open(result.trace_path))
    assert sum(e.get("name") == "model_run" for e in events) == 7  # warm-up runs are in the trace
    assert sorted(os.listdir(tmp_path)) == ["net.onnx", "net.profile.json"]  # no temp files left
    assert sum(op.share for op in result.by_op_type) == pytest.approx(1.0)
    assert sum(n.share for n in result.by_node) == pytest.approx(1.0)
    assert sum(op.nodes for op in result.by_op_type) == len(result.by_node)
    ops = {op.op_type for op in result.by_op_type}
    assert ops & {"Conv", "FusedConv"} and "Gemm" in ops
    assert result.nodes_by_provider == {"CPUExecutionProvider": len(result.by_node)}
    assert 0 < result.kernel_ms <= result.run_ms * 1.5
    assert result.qdq_share == 0.0


def test_qdq_share_counts_quantize_dequantize(tmp_path):
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 64] x) => (float[N, 64] y) {
            s = Constant<value = float {0.05}>()
            z = Constant<value = uint8 {128}>()
            q = QuantizeLinear(x, s, z)
            d = DequantizeLinear(q, s, z)
            y = Relu(d)
        }
        """
    )
    path = save(model, tmp_path / "qdq.onnx")
    result = profile(path, providers=(CPUOptions(graph_optimization="disable"),), runs=4, warmup=1,
                     trace_out=tmp_path / "traces" / "qdq.json")
    shares = {op.op_type: op.share for op in result.by_op_type}
    assert {"QuantizeLinear", "DequantizeLinear", "Relu"} <= set(shares)
    assert result.qdq_share == pytest.approx(shares["QuantizeLinear"] + shares["DequantizeLinear"])
    assert 0 < result.qdq_share < 1
    assert os.path.isfile(tmp_path / "traces" / "qdq.json")


def test_summarize_trace_leaves_out_warmup():
    def run(ts):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": 100}

    def kernel(node, op, ts, dur, provider="CPUExecutionProvider"):
        return {"cat": "Node", "name": f"{node}_kernel_time", "ts": ts, "dur": dur,
                "args": {"op_name": op, "provider": provider}}

    events = [run(0), kernel("a", "Conv", 1, 1000), run(200), kernel("a", "Conv", 201, 30),
              kernel("b", "DequantizeLinear", 240, 10), {"cat": "Node", "name": "a_fence_before", "ts": 241, "dur": 5},
              run(400), kernel("a", "Conv", 401, 50), kernel("b", "DequantizeLinear", 460, 10, "CUDAExecutionProvider")]
    s = summarize_trace(events, warmup=1)
    assert s["runs"] == 2 and s["run_ms"] == pytest.approx(0.1)
    assert s["kernel_ms"] == pytest.approx((30 + 10 + 50 + 10) / 2 / 1e3)
    assert [(o.op_type, o.nodes, o.share) for o in s["by_op_type"]] == [("Conv", 1, 0.8), ("DequantizeLinear", 1, 0.2)]
    assert s["qdq_share"] == pytest.approx(0.2)
    with pytest.raises(UsageError, match="fewer than warm-up"):
        summarize_trace(events, warmup=3)


def test_trace_never_over_the_model(tmp_path):
    path = save(conv_net()[0], tmp_path / "net.onnx")
    before = open(path, "rb").read()
    with pytest.raises(UsageError, match="never writes over its inputs"):
        profile(path, runs=1, trace_out=path)
    assert open(path, "rb").read() == before


def test_cli_profile(tmp_path, capsys):
    from edgeq.cli.main import main

    path = save(conv_net()[0], tmp_path / "net.onnx")
    np.savez(tmp_path / "x.npz", x=np.ones((3, 3, 8, 8), np.float32))
    with pytest.raises(SystemExit) as info:
        main(["profile", path, "--runs", "3", "--inputs", str(tmp_path / "x.npz"), "--json", str(tmp_path / "p.json")])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "time per op type" in out and "Gemm" in out and "net.profile.json" in out
    data = json.load(open(tmp_path / "p.json"))
    assert data["runs"] == 3 and data["by_node"] and data["trace_path"].endswith("net.profile.json")
