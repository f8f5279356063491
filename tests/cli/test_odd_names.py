"""What the commands print from a model or a file comes out as it is (issue 20, item 5).

rich reads ``[...]`` as a style tag and ``:name:`` as an emoji code: a shape such as
``[batch, 3, 8, 8]`` printed as markup came out empty. The model here has a symbolic batch dim
and names with brackets, a would-be tag, an emoji code and non-ASCII letters; its file name and
its input file's too. Every command that prints such text is run on it, through the real CLI
entry point, and its output must hold each name exactly. (The names cannot be written in ONNX
text, so the graph is conv_net's with its names replaced.)
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from rt_nets import conv_net

from edgeq.cli.main import main

X = "x[batch] ü"
Y = "logits[0] 输出"
CONV = "[bold]conv[/bold]"
RELU = "relu:smile:"
FC = "[red]fc[/red] ✓"  # onnxruntime fuses Conv+Relu under a name of its own: the profile shows fc and flatten
FLATTEN = "flatten:+1:"
NAMES = {"x": X, "y": Y, "conv": CONV, "relu": RELU, "fc": FC, "flatten": FLATTEN}


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert info.value.code == 0, captured.err[-2000:]
    return captured.out + captured.err


def _renamed(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = model.graph
    for node in graph.node:
        node.name = NAMES.get(node.name, node.name)
        node.input[:] = [NAMES.get(n, n) for n in node.input]
        node.output[:] = [NAMES.get(n, n) for n in node.output]
    for value in [*graph.input, *graph.output]:
        value.name = NAMES.get(value.name, value.name)
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    folder = tmp_path_factory.mktemp("odd [dir]")
    path = folder / "model [v2] ü.onnx"
    onnx.save(_renamed(conv_net()[0]), path)
    data = folder / "calib [set]"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        np.savez(data / f"{i} [x].npz", **{X: rng.standard_normal((1, 3, 8, 8)).astype(np.float32)})
    return path, data


def test_inspect_prints_shapes_and_names_as_they_are(odd, capsys):
    path, _ = odd
    out = _cli(["inspect", path], capsys)
    row = next(line for line in out.splitlines() if X in line)
    assert "[batch, 3, 8, 8]" in row and "float32" in row
    assert any(Y in line and "[batch, 10]" in line for line in out.splitlines())
    assert str(path) in out  # the header: the path, brackets and all
    assert "file size:" in out and "external data" not in out


def test_inspect_says_external_data_only_when_there_is_some(odd, tmp_path, capsys):
    model = onnx.load(odd[0])
    onnx.save_model(model, tmp_path / "ext [1].onnx", save_as_external_data=True, location="weights [1].bin",
                    size_threshold=0)
    out = _cli(["inspect", tmp_path / "ext [1].onnx"], capsys)
    assert "(with 1 external data file)" in out
    assert _cli(["inspect", "--json", tmp_path / "ext [1].onnx"], capsys).count("weights [1].bin") == 1


def test_run_bench_profile_print_names_as_they_are(odd, tmp_path, capsys):
    path, data = odd
    out = _cli(["run", path, "--inputs", data / "0 [x].npz"], capsys)
    assert "0 [x].npz on CPUExecutionProvider" in out and Y in out
    out = _cli(["bench", path, "--in-process", "--iters", 2, "--warmup", 0], capsys)
    assert path.name in out
    out = _cli(["profile", path, "--runs", 2, "--warmup", 0, "--trace", tmp_path / "trace [1].json"], capsys)
    assert str(path) in out and FC in out and FLATTEN in out


def test_quantize_prepare_compare_sensitivity_on_odd_names(odd, tmp_path, capsys):
    path, data = odd
    out_model = tmp_path / "q [int8].onnx"
    _cli(["quantize", path, "-o", out_model, "--calib", data, "--mode", "static"], capsys)
    out = _cli(["inspect", out_model], capsys)
    assert "[batch, 3, 8, 8]" in out and X in out
    _cli(["prepare", path, "-o", tmp_path / "p [1].onnx"], capsys)
    out = _cli(["compare", path, out_model, "--inputs", data, "--iters", 2, "--warmup", 0, "--no-profile"], capsys)
    assert Y in out
    out = _cli(["sensitivity", path, "--calib", data, "--quiet"], capsys)
    assert CONV in out
