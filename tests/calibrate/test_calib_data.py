"""load_data: every spec kind, and every DataError/UsageError case, before any work."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from edgeq.calibrate import FeedSource, load_data
from edgeq.errors import DataError, UsageError

from .graphs import conv_model, two_input_model


def _x(rng, h=8, w=8, dtype=np.float32):
    return rng.standard_normal((1, 3, h, w)).astype(dtype)


def test_npz_folder_mixed_sizes_and_float64_cast(tmp_path, rng):
    model = conv_model()
    for i, (h, w) in enumerate([(8, 8), (12, 6), (5, 9)]):
        np.savez(tmp_path / f"{i}.npz", x=_x(rng, h, w, np.float64))
    source = load_data(str(tmp_path), model)
    assert len(source) == 3
    feeds = list(source)
    assert [f["x"].shape[2:] for f in feeds] == [(8, 8), (12, 6), (5, 9)]
    assert all(f["x"].dtype == np.float32 for f in feeds)
    assert len(list(source)) == 3  # re-iterable


def test_single_npz_and_npy_folder_and_arr0(tmp_path, rng):
    model = conv_model()
    np.savez(tmp_path / "one.npz", x=_x(rng))
    assert len(load_data(tmp_path / "one.npz", model)) == 1
    npy = tmp_path / "npy"
    npy.mkdir()
    for i in range(2):
        np.save(npy / f"{i}.npy", _x(rng))
    assert [f["x"].shape for f in load_data(str(npy), model)] == [(1, 3, 8, 8)] * 2
    np.savez(tmp_path / "arr0.npz", _x(rng))  # positional: arr_0 maps to the only input
    assert list(next(iter(load_data(tmp_path / "arr0.npz", model)))) == ["x"]


def test_iterables_lists_generators_and_one_feed(rng):
    model = conv_model()
    feeds = [{"x": _x(rng)} for _ in range(3)]
    assert len(load_data(feeds, model)) == 3
    gen = load_data((f for f in feeds), model)
    assert len(list(gen)) == 3
    with pytest.raises(UsageError, match="one-shot"):
        list(gen)
    assert len(list(load_data(feeds[0], model))) == 1
    source = load_data(feeds, model)
    assert load_data(source, model) is source
    assert isinstance(source, FeedSource)


def test_module_function_spec(tmp_path, rng, monkeypatch):
    np.save(tmp_path / "arr.npy", _x(rng))
    (tmp_path / "calib_feeds_mod.py").write_text(
        "import numpy as np, os\n"
        "def feeds():\n"
        "    x = np.load(os.path.join(os.path.dirname(__file__), 'arr.npy'))\n"
        "    for i in range(4):\n"
        "        yield {'x': x * i}\n"
        "def broken():\n"
        "    raise RuntimeError('no data here')\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "calib_feeds_mod", raising=False)
    source = load_data("calib_feeds_mod:feeds", conv_model())
    assert len(list(source)) == 4 and len(list(source)) == 4  # called again per pass
    assert len(list(load_data(f"{tmp_path / 'calib_feeds_mod.py'}:feeds", conv_model()))) == 4
    with pytest.raises(UsageError, match="no data here"):
        load_data("calib_feeds_mod:broken", conv_model())
    with pytest.raises(UsageError, match="has no function 'nope'"):
        load_data("calib_feeds_mod:nope", conv_model())
    with pytest.raises(UsageError, match="cannot import 'no_such_mod_xyz'"):
        load_data("no_such_mod_xyz:feeds", conv_model())


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d, rng: None, "does not exist"),
        (lambda d, rng: os.makedirs(d), "holds no .npz or .npy files"),
        (lambda d, rng: (os.makedirs(d), np.savez(os.path.join(d, "a.npz"), y=_x(rng))), r"unknown input\(s\) 'y'.*expects 'x'"),
        (lambda d, rng: (os.makedirs(d), np.savez(os.path.join(d, "a.npz"), x=_x(rng).astype(np.int32))), "must be float32, got int32"),
        (lambda d, rng: (os.makedirs(d), np.savez(os.path.join(d, "a.npz"), x=_x(rng)[0])), r"rank 3.*x\[None\]"),
        (lambda d, rng: (os.makedirs(d), np.savez(os.path.join(d, "a.npz"), x=rng.standard_normal((1, 4, 8, 8)).astype(np.float32))), "dim 1 must be 3, not 4"),
        (lambda d, rng: (os.makedirs(d), np.savez(os.path.join(d, "a.npz")),), "holds no arrays"),
        (lambda d, rng: (os.makedirs(d), open(os.path.join(d, "a.npz"), "wb").write(b"PK\x03\x04garbage")), "cannot read calibration file"),
        (lambda d, rng: (os.makedirs(d), np.save(os.path.join(d, "a.npy"), np.array([{"a": 1}], dtype=object), allow_pickle=True)), "pickled"),
    ],
    ids=["missing", "empty-dir", "unknown-key", "int-vs-float", "rank", "fixed-dim", "no-arrays", "corrupt", "pickle"],
)
def test_file_errors_name_the_file(tmp_path, rng, make, match):
    folder = str(tmp_path / "data")
    make(folder, rng)
    with pytest.raises(DataError, match=match) as info:
        load_data(folder, conv_model())
    assert "data" in str(info.value)  # names the path


def test_nan_and_inf_are_found_in_any_file(tmp_path, rng):
    for i in range(3):
        np.savez(tmp_path / f"{i}.npz", x=_x(rng))
    bad = _x(rng)
    bad[0, 1, 2, 3] = np.inf
    np.savez(tmp_path / "9.npz", x=bad)
    with pytest.raises(DataError, match=r"input 'x' in .*9\.npz holds Inf"):
        load_data(str(tmp_path), conv_model())
    bad[0, 1, 2, 3] = np.nan
    with pytest.raises(DataError, match="holds NaN"):
        load_data([{"x": _x(rng)}, {"x": bad}], conv_model())


def test_two_inputs_missing_dtype_and_symbols(rng):
    model = two_input_model()
    ids = rng.integers(0, 9, (2, 4))
    mask = np.ones((2, 4), np.float32)
    assert len(load_data([{"ids": ids, "mask": mask}], model)) == 1
    with pytest.raises(DataError, match=r"lacks model input\(s\) 'mask'.*'ids', 'mask'"):
        load_data([{"ids": ids}], model)
    with pytest.raises(DataError, match="must be int64, got float32"):
        load_data([{"ids": ids.astype(np.float32), "mask": mask}], model)
    with pytest.raises(DataError, match="dim 'B' is 2 in input 'ids' but 3"):
        load_data([{"ids": ids, "mask": np.ones((3, 4), np.float32)}], model)


def test_npy_needs_a_one_input_model(tmp_path, rng):
    np.save(tmp_path / "a.npy", rng.integers(0, 9, (2, 4)))
    with pytest.raises(DataError, match=r"a\.npy is a .npy file, which only fits a model with one input"):
        load_data(str(tmp_path), two_input_model())


def test_empty_and_wrong_types(rng):
    with pytest.raises(DataError, match="holds no feeds"):
        load_data([], conv_model())
    with pytest.raises(DataError, match="yielded no feeds"):
        list(load_data(iter([]), conv_model()))
    with pytest.raises(DataError, match="is a list, not a dict"):
        load_data([[_x(rng)]], conv_model())
    with pytest.raises(UsageError, match="not int"):
        load_data(3, conv_model())
