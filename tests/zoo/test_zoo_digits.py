"""The digits classifiers: committed checkpoints reach >= 95% held-out top-1; data is fixed."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq import zoo
from edgeq.zoo import digits_data

DIGITS = ["digits_mobilenet", "digits_resnet"]


@pytest.mark.parametrize("name", DIGITS)
def test_checkpoint_heldout_accuracy(name):
    import torch

    spec = zoo.get(name)
    model = spec.build()
    assert not model.training
    feeds = spec.eval_data(n=10_000)
    labels = spec.eval_labels(n=10_000)
    _, _, heldout_x, _ = digits_data.split()
    assert len(feeds) == len(labels) == len(heldout_x)  # n capped at the held-out split
    x = np.concatenate([f["input"] for f in feeds])
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(1).numpy()
    assert (predicted == labels).mean() >= 0.95


def test_split_is_disjoint_and_fixed():
    train_x, train_y, held_x, held_y = digits_data.split()
    assert train_x.shape[1:] == (1, 32, 32) and train_x.dtype == np.float32
    assert len(train_x) + len(held_x) == 1797
    assert len(held_x) == round(0.3 * 1797)
    train_rows = {row.tobytes() for row in train_x.reshape(len(train_x), -1)}
    overlap = sum(row.tobytes() in train_rows for row in held_x.reshape(len(held_x), -1))
    assert overlap <= 2  # digits holds a couple of exact duplicate images, nothing more
    assert abs(float(train_x.mean())) < 0.1 and 0.8 < float(train_x.std()) < 1.2


@pytest.mark.parametrize("name", DIGITS)
def test_data_deterministic_and_batch_one(name):
    spec = zoo.get(name)
    a, b = spec.calibration_data(8, seed=3), spec.calibration_data(8, seed=3)
    assert len(a) == 8
    for fa, fb in zip(a, b):
        assert set(fa) == set(spec.input_names)
        assert fa["input"].shape == (1, 1, 32, 32) and fa["input"].dtype == np.float32
        np.testing.assert_array_equal(fa["input"], fb["input"])
    other = spec.calibration_data(8, seed=4)
    assert any(not np.array_equal(x["input"], y["input"]) for x, y in zip(a, other))
    np.testing.assert_array_equal(spec.eval_labels(50), spec.eval_labels(50))
    assert spec.eval_labels(50).dtype == np.int64


def test_calibration_comes_from_training_split_and_eval_from_heldout():
    train_x, _, held_x, held_y = digits_data.split()
    spec = zoo.get("digits_resnet")
    train_rows = {row.tobytes() for row in train_x.reshape(len(train_x), -1)}
    held_rows = {row.tobytes(): int(y) for row, y in zip(held_x.reshape(len(held_x), -1), held_y)}
    assert all(f["input"].tobytes() in train_rows for f in spec.calibration_data(32))
    feeds, labels = spec.eval_data(40), spec.eval_labels(40)
    assert [held_rows[f["input"].tobytes()] for f in feeds] == labels.tolist()
