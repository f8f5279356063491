"""The zoo contract: names, errors, I/O metadata, deterministic torch-free data generators."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgeq import zoo
from edgeq.errors import UsageError

FAST = ["digits_mobilenet", "digits_resnet", "mobilenet224", "resnet224", "tiny_transformer"]


def test_names_and_unknown_name_lists_them():
    assert zoo.names() == ["digits_mobilenet", "digits_resnet", "mobilenet224", "resnet224", "tiny_transformer", "minilm",
                           "textdet", "kws", "vad", "tiny_lm"]
    with pytest.raises(UsageError, match="unknown zoo model 'resnet50'.*digits_mobilenet.*minilm"):
        zoo.get("resnet50")


@pytest.mark.parametrize("name", FAST + ["minilm"])
def test_metadata_consistent(name):
    spec = zoo.get(name)
    assert spec.task in ("classification", "embedding", "hidden_states")
    assert set(spec.dynamic_axes) == set(spec.input_names) | set(spec.output_names)
    assert all(axes.get(0) == "batch" for axes in spec.dynamic_axes.values())
    assert (spec.eval_labels(3) is not None) == name.startswith("digits")


@pytest.mark.parametrize("name", FAST + ["minilm"])
def test_data_deterministic_feeds_of_batch_one(name):
    spec = zoo.get(name)
    for make in (spec.calibration_data, spec.eval_data):
        a, b, c = make(4, seed=5), make(4, seed=5), make(4, seed=6)
        assert len(a) == 4
        for fa, fb in zip(a, b):
            assert tuple(fa) == spec.input_names
            for key in fa:
                assert fa[key].shape[0] == 1
                np.testing.assert_array_equal(fa[key], fb[key])
        assert any(not np.array_equal(x[k], y[k]) for x, y in zip(a, c) for k in x)
    calib, evals = spec.calibration_data(4), spec.eval_data(4)
    assert not any(np.array_equal(x[k], y[k]) for x, y in zip(calib, evals) for k in x if k != "attention_mask")


def test_token_feeds_are_valid():
    spec = zoo.get("tiny_transformer")
    for feed in spec.calibration_data(16):
        ids, mask = feed["input_ids"], feed["attention_mask"]
        assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape == (1, 32)
        assert 0 <= ids.min() and ids.max() < 1000
        length = int(mask.sum())
        assert mask[0, :length].all() and not mask[0, length:].any() and not ids[0, length:].any()


def test_image_feeds_look_normalized():
    x = np.concatenate([f["input"] for f in zoo.get("mobilenet224").calibration_data(8)])
    assert x.shape == (8, 3, 224, 224) and x.dtype == np.float32
    assert abs(float(x.mean())) < 0.6 and 0.6 < float(x.std()) < 1.6
    # smooth, photo-like: neighbouring pixels correlate strongly (random noise would not)
    assert np.corrcoef(x[..., 1:].ravel(), x[..., :-1].ravel())[0, 1] > 0.8


def test_data_generators_do_not_import_torch():
    code = (
        "import sys\nfrom edgeq import zoo\n"
        f"for name in {FAST!r}:\n"
        "    spec = zoo.get(name); spec.calibration_data(2); spec.eval_data(2); spec.eval_labels(2)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_missing_package_names_the_extra_that_installs_it():
    """Without scikit-learn (``pip install .`` or ``".[torch]"``), the digits data is a UsageError
    naming ``edgeq[zoo]``; the kws data (numpy only) still works. tests/test_wheel.py sees the same
    in a real install."""
    code = (
        "import sys, importlib.abc\n"
        "class NoSklearn(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'sklearn':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoSklearn())\n"
        "from edgeq import UsageError, zoo\n"
        "zoo.get('kws').calibration_data(1)\n"
        "try:\n"
        "    zoo.get('digits_mobilenet').calibration_data(1)\n"
        "except UsageError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == ("zoo model 'digits_mobilenet' needs scikit-learn for its calibration data, which is not "
                           "installed: pip install 'edgeq[zoo]'")
