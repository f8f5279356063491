"""Session: lazy build, results against numpy, feed checks, model-file errors."""

from __future__ import annotations

import numpy as np
import pytest
from rt_nets import conv_net, conv_net_reference, save, two_input_add

from edgeq.errors import EdgeqError, InputError, ModelLoadError
from edgeq.runtime import CPUOptions, Session


@pytest.fixture(scope="module")
def net():
    return conv_net()


def test_run_matches_numpy_for_path_bytes_and_proto(net, tmp_path, rng):
    model, weights = net
    x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    expected = conv_net_reference(x, weights)
    path = save(model, tmp_path / "net.onnx")
    for source in (path, model.SerializeToString(), model):
        sess = Session(source, threads=1)
        assert sess._sess is None  # lazy: nothing built before first use
        out = sess.run({"x": x})
        assert list(out) == ["y"]
        assert out["y"].shape == (3, 10) and out["y"].dtype == np.float32
        np.testing.assert_allclose(out["y"], expected, rtol=1e-4, atol=1e-4)
        assert sess.providers == ["CPUExecutionProvider"]
        assert sess.start_seconds is not None and sess.start_seconds > 0


def test_specs_report_dtypes_and_symbolic_dims(net):
    sess = Session(net[0])
    (inp,) = sess.input_specs
    (out,) = sess.output_specs
    assert (inp.name, inp.dtype, inp.shape) == ("x", "float32", ("N", 3, 8, 8))
    assert (out.name, out.dtype, out.shape) == ("y", "float32", ("N", 10))
    specs = Session(two_input_add()).input_specs
    assert [(s.name, s.dtype) for s in specs] == [("a", "float32"), ("b", "float32"), ("ids", "int64")]


def test_threads_and_cpu_options_reach_onnxruntime(net):
    import onnxruntime as ort

    sess = Session(net[0], (CPUOptions(threads=3, graph_optimization="disable", arena=False),), threads=1)
    so = sess.ort_session.get_session_options()
    assert so.intra_op_num_threads == 1  # threads= overrides CPUOptions.threads
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert so.enable_cpu_mem_arena is False


def test_output_subset_and_unknown_output(rng):
    sess = Session(two_input_add())
    a = rng.standard_normal((2, 4)).astype(np.float32)
    feeds = {"a": a, "b": a, "ids": np.arange(2)}
    out = sess.run(feeds, outputs=["n"])
    assert list(out) == ["n"] and out["n"].tolist() == [0, 1]
    with pytest.raises(InputError, match="unknown output name.*'nope'.*'n', 'y'"):
        sess.run(feeds, outputs=["nope"])


@pytest.mark.parametrize(
    "feeds, pattern",
    [
        ({"a": np.zeros((2, 4), np.float32), "b": np.zeros((2, 4), np.float32), "ids": np.zeros(2, np.int64),
          "c": 1}, r"unknown input name\(s\) 'c'.*expects 'a', 'b', 'ids'"),
        ({"a": np.zeros((2, 4), np.float32), "ids": np.zeros(2, np.int64)}, r"missing input\(s\) 'b'"),
        ({"a": np.zeros((2, 4)), "b": np.zeros((2, 4), np.float32), "ids": np.zeros(2, np.int64)},
         r"input 'a' .* must be float32, got float64: convert it with array.astype\(np.float32\)"),
        ({"a": np.zeros((2, 4), np.float32), "b": np.zeros((2, 4), np.float32), "ids": np.zeros(2, np.int32)},
         r"input 'ids' .* must be int64, got int32"),
        ({"a": np.zeros((8,), np.float32), "b": np.zeros((2, 4), np.float32), "ids": np.zeros(2, np.int64)},
         r"input 'a' .* must have rank 2 \(shape \[N, 4\]\), got rank 1"),
        ({"a": np.zeros((2, 5), np.float32), "b": np.zeros((2, 5), np.float32), "ids": np.zeros(2, np.int64)},
         r"input 'a' .* must have shape \[N, 4\], got \[2, 5\]: dim 1 must be 4, not 5"),
        ({"a": np.zeros((2, 4), np.float32), "b": np.zeros((3, 4), np.float32), "ids": np.zeros(2, np.int64)},
         r"dim 'N' is 2 in input 'a' but 3 in input 'b'"),
    ],
    ids=["unknown-name", "missing", "dtype", "int-dtype", "rank", "fixed-dim", "symbolic-mismatch"],
)
def test_feed_errors_name_the_input_and_the_fix(feeds, pattern):
    sess = Session(two_input_add())
    with pytest.raises(InputError, match=pattern):
        sess.run(feeds)


def test_model_file_errors(net, tmp_path):
    data = net[0].SerializeToString()
    cases = {
        "missing": (tmp_path / "nope.onnx", "does not exist"),
        "folder": (tmp_path, "is a folder"),
        "empty": (tmp_path / "empty.onnx", "is empty"),
        "random": (tmp_path / "random.onnx", "not a valid ONNX model"),
        "truncated": (tmp_path / "half.onnx", "not a valid ONNX model"),
    }
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "random.onnx").write_bytes(np.random.default_rng(1).bytes(4096))
    (tmp_path / "half.onnx").write_bytes(data[: len(data) // 2])
    for name, (path, pattern) in cases.items():
        with pytest.raises(ModelLoadError, match=pattern) as info:
            Session(path).run({"x": np.zeros((1, 3, 8, 8), np.float32)})
        assert "\n" not in str(info.value), name
        assert str(path) in str(info.value), name


def test_runtime_failure_becomes_edgeq_error():
    import onnx

    # Reshape to a fixed size: a batch of 2 cannot fit, which only onnxruntime finds out.
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[4] y) { s = Constant<value = int64[1] {4}>() y = Reshape(x, s) }
        """
    )
    with pytest.raises(EdgeqError, match="onnxruntime failed running"):
        Session(model).run({"x": np.zeros((2, 4), np.float32)})


def test_onnx_ir_model_is_accepted(net, rng):
    import onnx_ir as ir

    model, weights = net
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    out = Session(ir.from_proto(model)).run({"x": x})
    np.testing.assert_allclose(out["y"], conv_net_reference(x, weights), rtol=1e-4, atol=1e-4)
    with pytest.raises(ModelLoadError, match="not list"):
        Session([1, 2])
