"""profile: per-op-type/node time from onnxruntime's profiler, Q/DQ share, the saved trace."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
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


def if_net(seed: int = 0) -> onnx.ModelProto:
    """x[1,32,128,128], sel int64 scalar -> If(sel > 0) -> Conv(32, 3x3) -> Reshape(512x1024) -> MatMul -> y.

    Both branches do the same work under their own node names; the main graph holds only the test.
    The work (about 20 ms a run) dwarfs the If's own overhead even on a slow, shared CPU (with a
    quarter of it, the If's share read 0.39 once on a 2-core AVX2 machine busy with another test)."""
    rng = np.random.default_rng(seed)
    weights = {"W": (rng.standard_normal((32, 32, 3, 3)) * 0.1).astype(np.float32),
               "M": (rng.standard_normal((1024, 256)) * 0.1).astype(np.float32),
               "shape": np.array([512, 1024], np.int64), "zero": np.array(0, np.int64)}

    def branch(name: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Conv", ["x", "W"], [f"{name}_c"], name=f"{name}_conv", pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", [f"{name}_c", "shape"], [f"{name}_r"], name=f"{name}_reshape"),
             helper.make_node("MatMul", [f"{name}_r", "M"], [f"{name}_y"], name=f"{name}_matmul")],
            name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [512, 256])])

    graph = helper.make_graph(
        [helper.make_node("Greater", ["sel", "zero"], ["cond"], name="test"),
         helper.make_node("If", ["cond"], ["y"], name="pick", then_branch=branch("then"), else_branch=branch("else"))],
        "if_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 128, 128]),
         helper.make_tensor_value_info("sel", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [512, 256])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_if_branch_time_is_counted_once(tmp_path):
    path = save(if_net(), tmp_path / "if.onnx")
    result = profile(path, threads=1, runs=5, warmup=1, keep_trace=False)
    shares = {op.op_type: op.share for op in result.by_op_type}
    assert shares["If"] < 0.3  # its own time: the branch choice, not the branch's Conv and MatMul
    assert sum(s for op, s in shares.items() if op in {"Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm"}) > 0.6
    assert sum(shares.values()) == pytest.approx(1.0)
    assert sum(n.share for n in result.by_node) == pytest.approx(1.0)
    assert 0 < result.kernel_ms <= result.run_ms * 1.02  # kernels of one thread fit in the run
    inside = {n.node: n.inside for n in result.by_node}
    assert inside["pick"] is None and inside["test"] is None
    branch = {node: parent for node, parent in inside.items() if node not in ("pick", "test")}
    assert branch and set(branch.values()) == {"pick"}
    assert {node.split("_")[0] for node in branch} in ({"then"}, {"else"})  # one branch ran


def test_summarize_trace_subtracts_subgraph_calls():
    def run(ts, dur):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur, "tid": 1}

    def execute(ts, dur, tid=1):
        return {"cat": "Session", "name": "SequentialExecutor::Execute", "ts": ts, "dur": dur, "tid": tid}

    def kernel(node, op, ts, dur, tid=1):
        return {"cat": "Node", "name": f"{node}_kernel_time", "ts": ts, "dur": dur, "tid": tid,
                "args": {"op_name": op, "provider": "CPUExecutionProvider"}}

    events = [
        run(0, 1000), execute(1, 998),
        kernel("test", "Greater", 2, 8),
        # If: 100 us, 90 of them one branch call whose kernels take 70 (the other 20: that call's overhead)
        kernel("then_conv", "Conv", 16, 40), kernel("then_mm", "MatMul", 60, 30), execute(15, 90),
        kernel("pick", "If", 10, 100),
        # Loop, 2 iterations of 50 us; the body nests an If whose branch has no executor event
        execute(201, 50), kernel("add", "Add", 205, 10), kernel("inner", "If", 220, 25), kernel("mul", "Mul", 222, 20),
        execute(252, 50), kernel("add", "Add", 255, 10), kernel("inner", "If", 270, 25), kernel("mul", "Mul", 272, 20),
        kernel("loop", "Loop", 200, 110),
        kernel("add", "Add", 400, 10),  # the main graph reuses a body node's name
        kernel("other", "Relu", 20, 50, tid=2),  # another thread, at the same time as the If: not inside it
    ]
    s = summarize_trace(events, warmup=0)
    nodes = {(n.node, n.inside): n.ms_per_run * 1e3 for n in s["by_node"]}
    assert nodes == pytest.approx({
        ("test", None): 8, ("pick", None): 10, ("then_conv", "pick"): 40, ("then_mm", "pick"): 30,
        ("loop", None): 10, ("add", "loop"): 20, ("inner", "loop"): 10, ("mul", "inner"): 40,
        ("add", None): 10, ("other", None): 50,
    })
    assert s["kernel_ms"] * 1e3 == pytest.approx(sum(nodes.values())) and s["kernel_ms"] < s["run_ms"]
    assert {o.op_type: o.nodes for o in s["by_op_type"]}["Add"] == 2
    assert sum(o.share for o in s["by_op_type"]) == pytest.approx(1.0)


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
