"""What edgeq reads and writes on disk, checked before anything is opened.

* ``regular_file``: only regular files are read. A FIFO would block ``open`` forever, a device
  such as ``/dev/zero`` never ends, a socket cannot be opened; they (and a folder where a file is
  expected) get one line naming the path at once.
* ``check_model_file``: the same for a model, plus missing and empty files.
* ``check_external_location``: an external-data location stays inside the model's folder (no
  ``..``, no absolute path, no symlink out, no NUL byte) and names a regular file.
* ``same_file``: two paths are one file (the same path, a symlink or a hard link).

It sits just above ``edgeq.errors`` so that every reader (config, io, runtime, calibrate) uses it.
"""

from __future__ import annotations

import os
import stat

from edgeq.errors import ModelLoadError, UsageError

__all__ = ["regular_file", "check_model_file", "check_external_location", "same_file"]

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def regular_file(path: str | os.PathLike, what: str, *, error: type[UsageError] = UsageError) -> str:
    """``path`` if it is an existing regular file (symlinks followed); else ``error`` naming
    ``what`` (``"model file"``, ``"calibration file"``, ...) and the fix. Never opens it."""
    path = os.fspath(path)
    if "\0" in path:
        raise error(f"{what} {path!r} holds a NUL byte: give a plain path")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist: check the path") from None
    except OSError as e:
        raise error(f"{what} {path} cannot be read ({e.strerror or type(e).__name__}): check the path") from None
    if stat.S_ISREG(mode):
        return path
    if stat.S_ISDIR(mode):
        raise error(f"{what} {path} is a folder, not a file: pass a file inside it")
    raise error(f"{what} {path} is {_kind(mode)}, not a regular file: edgeq only reads regular files; "
                "save the data to a file first")


def check_model_file(path: str | os.PathLike) -> str:
    """A model path that edgeq can read: exists, a regular file, not empty (ModelLoadError)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ModelLoadError(f"{path} is a folder, not a model file: pass the .onnx file inside it")
    regular_file(path, "model file", error=ModelLoadError)
    if os.path.getsize(path) == 0:
        raise ModelLoadError(f"model file {path} is empty: re-export or re-download it")
    return path


def check_external_location(location: str, base_dir: str, tensor: str, *, offset: int = 0,
                            length: int | None = None) -> str:
    """The real path of the external data of ``tensor`` at ``location`` (relative to the model's
    folder ``base_dir``); ModelLoadError if it leaves the folder, is not a regular file, or
    ``offset``/``length`` lie past its end."""
    if "\0" in location:
        raise ModelLoadError(f"initializer {tensor!r} has an external-data location holding a NUL byte "
                             f"({location!r}): the model is corrupt or hostile; re-export it")
    if os.path.isabs(location) or ".." in location.replace("\\", "/").split("/"):
        raise ModelLoadError(f"initializer {tensor!r} points to external data {location!r} outside the model's "
                             f"folder {base_dir}: refusing to read it; move the data file beside the model")
    root = os.path.realpath(base_dir)
    target = os.path.realpath(os.path.join(base_dir, location))
    if os.path.commonpath([root, target]) != root:
        raise ModelLoadError(f"initializer {tensor!r} points to external data {location!r}, a link out of the "
                             f"model's folder {base_dir}: refusing to read it; move the data file beside the model")
    if not os.path.lexists(target):
        raise ModelLoadError(f"initializer {tensor!r} needs external data file {location!r}, which is missing "
                             f"from {base_dir}: copy it beside the model")
    regular_file(target, f"external data file of initializer {tensor!r}", error=ModelLoadError)
    size = os.path.getsize(target)
    if offset < 0 or (length is not None and length < 0) or offset + (length or 0) > size:
        raise ModelLoadError(f"initializer {tensor!r} reads bytes {offset}..{offset + (length or 0)} of {location!r}, "
                             f"which holds {size}: the data file is truncated or not this model's; re-export it")
    return target


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` are one file: the same real path, or (both existing) the same
    inode, so a hard link counts."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False
