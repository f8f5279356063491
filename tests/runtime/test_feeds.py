"""Feed files (.npz / folders / .npy) and random feeds from input specs."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.errors import DataError, UsageError
from edgeq.runtime import TensorSpec, load_feeds, random_feeds


def test_npz_file_and_sorted_folder(tmp_path):
    np.savez(tmp_path / "one.npz", x=np.ones((1, 4), np.float32), ids=np.arange(3))
    (feed,) = load_feeds(tmp_path / "one.npz")
    assert sorted(feed) == ["ids", "x"] and feed["ids"].tolist() == [0, 1, 2]
    folder = tmp_path / "many"
    folder.mkdir()
    for i in (2, 0, 1):
        np.savez(folder / f"s{i}.npz", x=np.full((1, 4), i, np.float32))
    (folder / "notes.txt").write_text("ignored")
    feeds = load_feeds(folder)
    assert [f["x"][0, 0] for f in feeds] == [0.0, 1.0, 2.0]


def test_npy_only_for_one_input(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 2), np.float32))
    (feed,) = load_feeds(tmp_path / "x.npy", ["x"])
    assert feed["x"].shape == (2, 2)
    with pytest.raises(DataError, match="only fits a model with one input"):
        load_feeds(tmp_path / "x.npy", ["a", "b"])


@pytest.mark.parametrize("case", ["missing", "empty-folder", "pickle", "random-bytes", "truncated", "no-arrays", "txt"])
def test_bad_feed_files(tmp_path, case):
    path = tmp_path / "f.npz"
    if case == "missing":
        pattern = "does not exist"
    elif case == "empty-folder":
        path = tmp_path / "d"
        path.mkdir()
        pattern = "holds no .npz"
    elif case == "pickle":
        np.savez(path, x=np.array([{"a": 1}], dtype=object))
        pattern = "pickled"
    elif case == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(512))
        pattern = "cannot read feeds file"
    elif case == "truncated":
        np.savez(tmp_path / "good.npz", x=np.ones((64, 64), np.float32))
        data = (tmp_path / "good.npz").read_bytes()
        path.write_bytes(data[: len(data) // 2])
        pattern = "cannot read feeds file"
    elif case == "no-arrays":
        np.savez(path)
        pattern = "holds no arrays"
    else:
        path = tmp_path / "f.txt"
        path.write_text("1 2 3")
        pattern = "must be an .npz"
    with pytest.raises(DataError, match=pattern) as info:
        load_feeds(path)
    assert str(path) in str(info.value)


def test_random_feeds_follow_specs():
    specs = [
        TensorSpec("x", "float32", ("batch", 3, 4)),
        TensorSpec("ids", "int64", ("batch", "seq")),
        TensorSpec("mask", "bool", ("batch", "seq")),
        TensorSpec("q", "uint8", (2,)),
    ]
    feed = random_feeds(specs, batch=5, dims={"seq": 7})
    assert feed["x"].shape == (5, 3, 4) and feed["x"].dtype == np.float32
    assert feed["ids"].shape == (5, 7) and feed["ids"].dtype == np.int64
    assert feed["ids"].min() >= 0 and feed["ids"].max() < 100
    assert feed["mask"].dtype == bool and feed["mask"].all()
    assert feed["q"].dtype == np.uint8 and feed["q"].shape == (2,)
    # an explicit shape wins, its first dim following the batch
    feed = random_feeds(specs, batch=2, dims={"seq": 3}, shapes={"x": [1, 3, 4]})
    assert feed["x"].shape == (2, 3, 4)


def test_random_feed_errors():
    with pytest.raises(UsageError, match=r"symbolic 'seq'.*--input-shape ids=\.\.\. or --dim NAME=SIZE"):
        random_feeds([TensorSpec("ids", "int64", ("batch", "seq"))], batch=1)
    with pytest.raises(UsageError, match=r"fixed batch of 1 \(input .x. is \[1, 3\]\): use batch 1"):
        random_feeds([TensorSpec("x", "float32", (1, 3))], batch=8)
    with pytest.raises(UsageError, match="unknown input.*'y'"):
        random_feeds([TensorSpec("x", "float32", (1, 3))], shapes={"y": [1]})
    with pytest.raises(UsageError, match="has rank 1 but the model expects"):
        random_feeds([TensorSpec("x", "float32", ("N", 3))], shapes={"x": [3]})
