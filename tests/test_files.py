"""edgeq.files: only regular files are read; external data stays inside the model's folder."""

from __future__ import annotations

import os

import pytest

from edgeq.errors import DataError, ModelLoadError, UsageError
from edgeq.files import check_external_location, check_model_file, regular_file, same_file


def test_regular_file_names_what_the_path_is(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    assert regular_file(tmp_path / "a.json", "config file") == str(tmp_path / "a.json")
    os.mkfifo(tmp_path / "pipe")
    cases = [(tmp_path / "pipe", "is a FIFO (named pipe)"), ("/dev/zero", "is a character device"),
             (tmp_path, "is a folder"), (tmp_path / "none", "does not exist"), ("a\0b", "NUL byte")]
    for path, expected in cases:
        with pytest.raises(DataError, match="calibration file") as info:
            regular_file(path, "calibration file", error=DataError)
        assert expected in str(info.value)
    with pytest.raises(UsageError, match="is a FIFO"):
        regular_file(tmp_path / "pipe", "ranges file")


def test_model_file_checks(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is empty"):
        check_model_file(tmp_path / "empty.onnx")
    with pytest.raises(ModelLoadError, match="is a folder"):
        check_model_file(tmp_path)


def test_external_locations_stay_inside_and_within_the_file(tmp_path):
    (tmp_path / "w.data").write_bytes(b"\0" * 64)
    (tmp_path.parent / "outside.data").write_bytes(b"\0" * 64)
    os.symlink(tmp_path.parent / "outside.data", tmp_path / "link.data")
    assert check_external_location("w.data", str(tmp_path), "W", offset=32, length=32) == str(tmp_path / "w.data")
    cases = [("../outside.data", "outside the model's folder"), ("/etc/passwd", "outside the model's folder"),
             ("link.data", "a link out of"), ("w\0.data", "NUL byte"), ("none.data", "missing")]
    for location, expected in cases:
        with pytest.raises(ModelLoadError, match="initializer 'W'") as info:
            check_external_location(location, str(tmp_path), "W")
        assert expected in str(info.value)
    with pytest.raises(ModelLoadError, match="reads bytes 48..80 of 'w.data', which holds 64"):
        check_external_location("w.data", str(tmp_path), "W", offset=48, length=32)


def test_same_file_sees_links(tmp_path):
    (tmp_path / "a").write_text("x")
    os.link(tmp_path / "a", tmp_path / "hard")
    os.symlink(tmp_path / "a", tmp_path / "soft")
    (tmp_path / "b").write_text("x")
    assert same_file(tmp_path / "a", tmp_path / "hard") and same_file(tmp_path / "a", tmp_path / "soft")
    assert not same_file(tmp_path / "a", tmp_path / "b")
    assert not same_file(tmp_path / "a", tmp_path / "new")
