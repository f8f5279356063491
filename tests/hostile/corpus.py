"""A hostile corpus (issue 14): a small valid model and calibration set, each case with one change.

``CASES`` maps a name to a ``Case``; ``case.build(folder)`` writes the case's files into an empty
folder and returns a ``Setup`` (the paths each command is given). ``commands(case, setup, out)``
lists the edgeq command lines that read the changed part. ``python tests/hostile/corpus.py DIR``
writes every case into ``DIR/<name>/`` to try them by hand.

The base: ``x[N,3,8,8] -> Conv -> Relu -> Flatten -> Gemm -> y[N,10]`` (``rt_nets.conv_net``) and
a folder of four ``.npz`` feeds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "runtime"))
from rt_nets import conv_net  # noqa: E402

__all__ = ["Case", "Setup", "CASES", "commands", "write_all"]


@dataclasses.dataclass
class Setup:
    model: str
    calib: str
    config: str | None = None
    ranges: str | None = None


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "model", "data", "config" or "ranges": the part that was changed
    build: Callable[[Path], Setup]
    expect: str = "error"  # "error": exit 1 or 2; "ok": a valid input (exit 0), a warning may come
    # commands that may succeed all the same: inspect describes structure (a graph-level flaw
    # need not stop it); run runs a model on data (it does not calibrate)
    ok_in: tuple[str, ...] = ()
    auto: bool = True  # also run the default (auto) mode


# -- the base ----------------------------------------------------------------------------------


def _base() -> onnx.ModelProto:
    return conv_net()[0]


def _feeds(folder: Path, make: Callable[[int], dict[str, np.ndarray]] | None = None, n: int = 4) -> str:
    calib = folder / "calib"
    calib.mkdir(exist_ok=True)
    for i in range(n):
        feed = make(i) if make else {"x": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)}
        np.savez(calib / f"{i}.npz", **feed)
    return str(calib)


def _write(folder: Path, model: onnx.ModelProto | bytes, calib: str | None = None) -> Setup:
    path = folder / "model.onnx"
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    return Setup(str(path), calib or _feeds(folder))


def _model_case(mutate: Callable[[onnx.ModelProto], onnx.ModelProto | bytes | None]) -> Callable[[Path], Setup]:
    def build(folder: Path) -> Setup:
        model = _base()
        result = mutate(model)
        return _write(folder, model if result is None else result)

    return build


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _init(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


# -- model mutations ---------------------------------------------------------------------------


def _truncated(m):
    data = m.SerializeToString()
    return data[: len(data) // 2]


def _random_bytes(m):
    return np.random.default_rng(1).bytes(4096)


def _opset(m):
    m.opset_import[0].version = 99


def _ir_version(m):
    m.ir_version = 99


def _no_opset(m):
    del m.opset_import[:]


def _unknown_op(m):
    _node(m, "relu").op_type = "Frobnicate"


def _unknown_domain(m):
    _node(m, "relu").domain = "com.evil"
    m.opset_import.append(helper.make_opsetid("com.evil", 1))


def _dangling_input(m):
    _node(m, "relu").input[0] = "nothing_makes_this"


def _dangling_output(m):
    m.graph.output.append(helper.make_tensor_value_info("ghost", TensorProto.FLOAT, [1]))


def _cycle(m):
    _node(m, "relu").input[0] = "f"  # relu reads flatten's output, flatten reads relu's


def _duplicate_inputs(m):
    m.graph.input.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8]))


def _string_input(m):
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.STRING


def _zero_bias(m):
    bias = _init(m, "B")
    del bias.dims[:]
    bias.dims.append(0)
    bias.raw_data = b""


def _short_raw(m):
    weight = _init(m, "W")
    weight.raw_data = weight.raw_data[:16]


def _huge_dim(m):
    weight = _init(m, "W")
    weight.dims[0] = 2**40


def _huge_input_dim(m):
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2**40


def _no_graph(m):
    del m.graph.node[:]
    del m.graph.output[:]


def _bad_attribute(m):
    conv = _node(m, "conv")
    del conv.attribute[:]
    conv.attribute.append(helper.make_attribute("strides", "two"))


def _int_weights(m):
    weight = _init(m, "G")
    weight.CopyFrom(onnx.numpy_helper.from_array(np.ones((10, 128), np.int32), "G"))


def _wrong_output_type(m):
    m.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64


def _zipmap_output(m):
    """A second output through ZipMap (a sequence of maps, as skl2onnx writes classifiers):
    valid ONNX that onnx_ir cannot read."""
    m.graph.node.append(helper.make_node("ZipMap", ["y"], ["probs"], domain="ai.onnx.ml",
                                         classlabels_int64s=list(range(10))))
    seq_map = helper.make_sequence_type_proto(helper.make_map_type_proto(TensorProto.INT64,
                                              helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    m.graph.output.append(helper.make_value_info("probs", seq_map))
    m.opset_import.append(helper.make_opsetid("ai.onnx.ml", 1))


def _empty_file(m):
    return b""


def _recursive_function(m):
    func = helper.make_function("local", "Loop1", ["a"], ["b"], [helper.make_node("Loop1", ["a"], ["b"], domain="local")],
                                [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    m.functions.append(func)
    m.opset_import.append(helper.make_opsetid("local", 1))
    _node(m, "relu").op_type, _node(m, "relu").domain = "Loop1", "local"


# -- external data -----------------------------------------------------------------------------


def _external(edit: Callable[[onnx.TensorProto, Path], None]) -> Callable[[Path], Setup]:
    """The base with W in ``w.data`` beside the model, then ``edit(W's tensor, folder)``."""

    def build(folder: Path) -> Setup:
        model = _base()
        weight = _init(model, "W")
        (folder / "w.data").write_bytes(weight.raw_data)
        size = len(weight.raw_data)
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "w.data"), ("offset", "0"), ("length", str(size))):
            weight.external_data.append(onnx.StringStringEntryProto(key=key, value=value))
        edit(weight, folder)
        return _write(folder, model)

    return build


def _set(weight: onnx.TensorProto, key: str, value: str) -> None:
    for entry in weight.external_data:
        if entry.key == key:
            entry.value = value


def _outside_file(folder: Path) -> str:
    outside = folder.parent / f"{folder.name}-outside.data"
    outside.write_bytes(b"\0" * 4096)
    return str(outside)


EXTERNAL: dict[str, Callable[[onnx.TensorProto, Path], None]] = {
    "external-offset-past-end": lambda w, d: _set(w, "offset", "100000"),
    "external-length-past-end": lambda w, d: _set(w, "length", "100000"),
    "external-missing-file": lambda w, d: _set(w, "location", "absent.data"),
    "external-dotdot": lambda w, d: (_outside_file(d), _set(w, "location", f"../{d.name}-outside.data")),
    "external-absolute": lambda w, d: _set(w, "location", _outside_file(d)),
    "external-etc-passwd": lambda w, d: _set(w, "location", "../../../../../../etc/passwd"),
    "external-dev-zero": lambda w, d: _set(w, "location", "/dev/zero"),
    "external-nul-byte": lambda w, d: _set(w, "location", "w.data\0.txt"),
    "external-symlink-out": lambda w, d: (os.symlink(_outside_file(d), d / "link.data"), _set(w, "location", "link.data")),
    "external-is-folder": lambda w, d: ((d / "sub").mkdir(), _set(w, "location", "sub")),
    "external-fifo": lambda w, d: (os.mkfifo(d / "pipe.data"), _set(w, "location", "pipe.data")),
}


# -- files that are not files ------------------------------------------------------------------


def _fifo_model(folder: Path) -> Setup:
    os.mkfifo(folder / "model.onnx")
    return Setup(str(folder / "model.onnx"), _feeds(folder))


def _folder_model(folder: Path) -> Setup:
    (folder / "model.onnx").mkdir()
    return Setup(str(folder / "model.onnx"), _feeds(folder))


def _device_model(folder: Path) -> Setup:
    return Setup("/dev/zero", _feeds(folder))


# -- data --------------------------------------------------------------------------------------


def _data_case(make: Callable[[int], dict[str, np.ndarray]]) -> Callable[[Path], Setup]:
    def build(folder: Path) -> Setup:
        return _write(folder, _base(), _feeds(folder, make))

    return build


def _x(shape=(1, 3, 8, 8), dtype=np.float32, fill: float | None = None):
    def make(i: int) -> dict[str, np.ndarray]:
        if fill is not None:
            return {"x": np.full(shape, fill, dtype)}
        return {"x": np.random.default_rng(i).standard_normal(shape).astype(dtype)}

    return make


def _poisoned(value: float, at: int = 0):
    def make(i: int) -> dict[str, np.ndarray]:
        x = np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)
        if i == at:
            x[0, 0, 0, 0] = value
        return {"x": x}

    return make


def _calib_fifo(folder: Path) -> Setup:
    os.mkfifo(folder / "calib.npz")
    return _write(folder, _base(), str(folder / "calib.npz"))


def _calib_member_fifo(folder: Path) -> Setup:
    calib = _feeds(folder)
    os.mkfifo(os.path.join(calib, "9.npz"))
    return _write(folder, _base(), calib)


def _calib_member_folder(folder: Path) -> Setup:
    calib = _feeds(folder)
    os.mkdir(os.path.join(calib, "9.npz"))
    return _write(folder, _base(), calib)


def _calib_empty_folder(folder: Path) -> Setup:
    (folder / "calib").mkdir()
    return _write(folder, _base(), str(folder / "calib"))


def _calib_truncated(folder: Path) -> Setup:
    calib = _feeds(folder)
    path = os.path.join(calib, "0.npz")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    return _write(folder, _base(), calib)


def _calib_pickle(folder: Path) -> Setup:
    calib = _feeds(folder)
    np.savez(os.path.join(calib, "0.npz"), x=np.array([{"a": 1}], dtype=object))
    return _write(folder, _base(), calib)


def _calib_mixed(folder: Path) -> Setup:
    calib = _feeds(folder)
    np.save(os.path.join(calib, "9.npy"), np.zeros((1, 3, 8, 8), np.float32))
    return _write(folder, _base(), calib)


# -- config and ranges -------------------------------------------------------------------------


def _config_case(content: str | dict, name: str = "config.json") -> Callable[[Path], Setup]:
    def build(folder: Path) -> Setup:
        setup = _write(folder, _base())
        path = folder / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        setup.config = str(path)
        return setup

    return build


def _config_fifo(folder: Path) -> Setup:
    setup = _write(folder, _base())
    os.mkfifo(folder / "config.json")
    setup.config = str(folder / "config.json")
    return setup


def _ranges_case(content: str | None) -> Callable[[Path], Setup]:
    def build(folder: Path) -> Setup:
        setup = _write(folder, _base())
        path = folder / "ranges.json"
        if content is None:
            os.mkfifo(path)
        else:
            path.write_text(content)
        setup.ranges = str(path)
        return setup

    return build


# -- the table ---------------------------------------------------------------------------------


def _cases() -> dict[str, Case]:
    cases = [
        # the model file
        Case("truncated-protobuf", "model", _model_case(_truncated)),
        Case("random-bytes", "model", _model_case(_random_bytes)),
        Case("empty-file", "model", _model_case(_empty_file)),
        Case("model-fifo", "model", _fifo_model),
        Case("model-folder", "model", _folder_model),
        Case("model-dev-zero", "model", _device_model),
        Case("opset-99", "model", _model_case(_opset), ok_in=("inspect",)),
        Case("ir-version-99", "model", _model_case(_ir_version), ok_in=("inspect",)),
        Case("no-opset-import", "model", _model_case(_no_opset), ok_in=("inspect",)),
        Case("unknown-op", "model", _model_case(_unknown_op), ok_in=("inspect",)),
        Case("unknown-domain", "model", _model_case(_unknown_domain), ok_in=("inspect",)),
        Case("dangling-node-input", "model", _model_case(_dangling_input), ok_in=("inspect",)),
        Case("dangling-graph-output", "model", _model_case(_dangling_output), ok_in=("inspect",)),
        Case("cycle", "model", _model_case(_cycle), ok_in=("inspect",)),
        Case("duplicate-graph-inputs", "model", _model_case(_duplicate_inputs), ok_in=("inspect",)),
        Case("string-input-into-conv", "model", _model_case(_string_input), ok_in=("inspect",)),
        Case("zero-size-bias", "model", _model_case(_zero_bias), ok_in=("inspect",)),
        Case("raw-initializer-short", "model", _model_case(_short_raw)),
        Case("dim-2-pow-40", "model", _model_case(_huge_dim)),
        Case("input-dim-2-pow-40", "model", _model_case(_huge_input_dim), ok_in=("inspect", "prepare")),
        Case("no-graph", "model", _model_case(_no_graph)),
        Case("attribute-wrong-type", "model", _model_case(_bad_attribute), ok_in=("inspect",)),
        Case("int-weights-into-gemm", "model", _model_case(_int_weights), ok_in=("inspect",)),
        Case("output-type-wrong", "model", _model_case(_wrong_output_type), ok_in=("inspect",)),
        Case("zipmap-output", "model", _model_case(_zipmap_output), ok_in=("inspect", "run")),
        Case("recursive-function", "model", _model_case(_recursive_function), ok_in=("inspect",)),
        # external data
        *(Case(name, "model", _external(edit)) for name, edit in EXTERNAL.items()),
        # calibration data
        Case("calib-fifo", "data", _calib_fifo),
        Case("calib-member-fifo", "data", _calib_member_fifo),
        Case("calib-member-folder", "data", _calib_member_folder),
        Case("calib-empty-folder", "data", _calib_empty_folder),
        Case("calib-truncated-npz", "data", _calib_truncated),
        Case("calib-pickle", "data", _calib_pickle),
        Case("calib-mixed-npz-npy", "data", _calib_mixed, ok_in=("run",)),
        Case("calib-batch-zero", "data", _data_case(_x((0, 3, 8, 8))), ok_in=("run",)),
        Case("calib-nan", "data", _data_case(_poisoned(float("nan"))), ok_in=("run",)),
        Case("calib-inf", "data", _data_case(_poisoned(float("inf"), at=2)), ok_in=("run",)),
        Case("calib-wrong-name", "data", _data_case(lambda i: {"image": np.zeros((1, 3, 8, 8), np.float32)})),
        Case("calib-extra-name", "data", _data_case(lambda i: {"x": np.zeros((1, 3, 8, 8), np.float32),
                                                               "y": np.zeros(1, np.float32)})),
        Case("calib-wrong-shape", "data", _data_case(_x((1, 3, 9, 8)))),
        Case("calib-wrong-rank", "data", _data_case(_x((3, 8, 8)))),
        Case("calib-int-dtype", "data", _data_case(_x(dtype=np.int32))),
        Case("calib-string-dtype", "data", _data_case(lambda i: {"x": np.array(["a"] * 192).reshape(1, 3, 8, 8)})),
        Case("calib-complex", "data", _data_case(_x(dtype=np.complex64))),
        # valid but suspicious data: a warning, not an error
        Case("calib-all-zero", "data", _data_case(_x(fill=0.0)), expect="ok", ok_in=("run",)),
        Case("calib-constant", "data", _data_case(_x(fill=0.5)), expect="ok", auto=False, ok_in=("run",)),
        Case("calib-1e30", "data", _data_case(_poisoned(1e30)), expect="ok", auto=False, ok_in=("run",)),
        Case("calib-float64", "data", _data_case(_x(dtype=np.float64)), expect="ok", auto=False, ok_in=("run",)),
        # config
        Case("config-percentile-string", "config", _config_case({"method": "percentile", "percentile": "high"})),
        Case("config-exclude-int", "config", _config_case({"exclude": 3})),
        Case("config-num-bins-huge", "config", _config_case({"method": "entropy", "num_bins": 2**40})),
        Case("config-symmetric-string", "config", _config_case({"symmetric": "yes"})),
        Case("config-threads-bool", "config", _config_case({"threads": True})),
        Case("config-unknown-field", "config", _config_case({"speed": "max"})),
        Case("config-list", "config", _config_case([1, 2])),
        Case("config-bad-json", "config", _config_case("{not json")),
        Case("config-bad-toml", "config", _config_case("mode = = 1", "config.toml")),
        Case("config-fifo", "config", _config_fifo),
        Case("config-precision-bad", "config", _config_case({"precision": {"conv": "int3"}})),
        # ranges
        Case("ranges-fifo", "ranges", _ranges_case(None)),
        Case("ranges-not-json", "ranges", _ranges_case("{")),
        Case("ranges-not-table", "ranges", _ranges_case('{"a": 1}')),
    ]
    return {case.name: case for case in cases}


CASES = _cases()


def commands(case: Case, setup: Setup, out: Path) -> list[tuple[str, list[str]]]:
    """(label, argv) of every command that reads the part ``case`` changed; outputs go in ``out``."""
    quantize = ["quantize", setup.model, "-o", str(out / "q.onnx"), "--calib", setup.calib, "-q"]
    if setup.config:
        quantize += ["--config", setup.config]
    if setup.ranges:
        quantize += ["--ranges", setup.ranges]
    runs = [("quantize-static", [*quantize, "--mode", "static"])]
    if case.auto and case.kind != "ranges":
        runs.append(("quantize-default", quantize))
    if case.kind == "model":
        runs += [("prepare", ["prepare", setup.model, "-o", str(out / "p.onnx")]),
                 ("inspect", ["inspect", setup.model]),
                 ("run", ["run", setup.model, "--inputs", setup.calib, "--threads", "1"])]
    if case.kind == "data":
        runs += [("prepare", ["prepare", setup.model, "-o", str(out / "p.onnx"), "--calib", setup.calib]),
                 ("run", ["run", setup.model, "--inputs", setup.calib, "--threads", "1"])]
    return runs


def write_all(root: Path) -> None:
    for name, case in CASES.items():
        folder = root / name
        folder.mkdir(parents=True)
        case.build(folder)


if __name__ == "__main__":
    write_all(Path(sys.argv[1]))
