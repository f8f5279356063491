"""edgeq.io: safe loading (clear errors, external data kept inside the folder) and atomic saving."""

import os
import stat

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest

from edgeq.errors import ModelLoadError, UsageError
from edgeq.io import load_model, save_model
from ortutil import run_ort


def _matmul_model(k: int = 64) -> onnx.ModelProto:
    w = onh.from_array(np.arange(k * 8, dtype=np.float32).reshape(k, 8) / 100, "w")
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, k])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8])],
        [w],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "does not exist"),
        (lambda p: os.makedirs(p), "is a folder"),
        (lambda p: open(p, "wb").close(), "is empty"),
        (lambda p: open(p, "wb").write(os.urandom(4096)), "not a valid ONNX model"),
        (lambda p: open(p, "wb").write(_matmul_model().SerializeToString()[:120]), "truncated"),
    ],
    ids=["missing", "folder", "empty", "corrupt", "truncated"],
)
def test_bad_files_give_one_clear_error(tmp_path, make, message):
    path = str(tmp_path / "m.onnx")
    make(path)
    with pytest.raises(ModelLoadError, match=message) as info:
        load_model(path)
    assert "\n" not in str(info.value) and path in str(info.value)


def test_external_data_outside_the_folder_is_refused(tmp_path):
    model = _matmul_model()
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="w.data", size_threshold=0)
    inner = tmp_path / "inner"
    inner.mkdir()
    moved = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    for init in moved.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = "../w.data"
    onnx.save(moved, inner / "m.onnx")
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        load_model(inner / "m.onnx")
    # the well-formed original loads, with its weights read from beside it
    x = np.ones((1, 64), np.float32)
    assert load_model(tmp_path / "m.onnx").graph.initializers["w"].const_value.numpy().shape == (64, 8)
    assert np.allclose(run_ort(str(tmp_path / "m.onnx"), {"x": x})[0], run_ort(_matmul_model(), {"x": x})[0])


def test_missing_external_data_file_names_it(tmp_path):
    onnx.save(_matmul_model(), tmp_path / "m.onnx", save_as_external_data=True, location="w.data", size_threshold=0)
    os.remove(tmp_path / "w.data")
    with pytest.raises(ModelLoadError, match="w.data"):
        load_model(tmp_path / "m.onnx")


def test_save_is_atomic_never_over_input_and_readable(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(_matmul_model(), src)
    before = src.read_bytes()
    with pytest.raises(UsageError, match="same file as input"):
        save_model(load_model(src), src, inputs=[src])
    assert src.read_bytes() == before
    out = tmp_path / "sub" / "out.onnx"
    save_model(load_model(src), out, inputs=[src])
    assert [p.name for p in out.parent.iterdir()] == ["out.onnx"]  # no temporary left behind
    assert stat.S_IMODE(os.stat(out).st_mode) & 0o044  # group/other can read, like any output
    x = np.ones((1, 64), np.float32)
    assert np.array_equal(run_ort(str(out), {"x": x})[0], run_ort(str(src), {"x": x})[0])


def test_large_weights_go_to_external_data(tmp_path, monkeypatch):
    import edgeq.io

    monkeypatch.setattr(edgeq.io, "EXTERNAL_DATA_THRESHOLD", 1000)  # stands in for 1.8 GB
    out = tmp_path / "big.onnx"
    save_model(_matmul_model(k=256), out)
    assert (tmp_path / "big.onnx.data").stat().st_size >= 256 * 8 * 4
    assert out.stat().st_size < 2000
    x = np.ones((1, 256), np.float32)
    assert np.allclose(run_ort(str(out), {"x": x})[0], run_ort(_matmul_model(k=256), {"x": x})[0])


def test_a_map_typed_output_is_named_with_the_fix_not_called_corrupt(tmp_path):
    """skl2onnx's classifiers end in ZipMap (a sequence of maps), which onnx_ir cannot read: the
    error names the value and the re-export, for a file and for a ModelProto alike."""
    import pytest

    import edgeq
    from edgeq.errors import UnsupportedError
    from hostile.corpus import _base, _zipmap_output

    model = _base()
    _zipmap_output(model)
    path = tmp_path / "zipmap.onnx"
    path.write_bytes(model.SerializeToString())
    for given in (str(path), model):
        with pytest.raises(UnsupportedError, match=r"\('probs'\).*zipmap': False") as info:
            edgeq.quantize(given, edgeq.QuantConfig(mode="dynamic"), None, progress=False)
        assert "corrupt" not in str(info.value)
