"""Calibration data: ``load_data(spec, model) -> FeedSource``, validated before any work.

A spec is one of

1. an ``.npz`` file (keys = input names; a single ``arr_0`` key fits a one-input model),
2. a folder of ``.npz`` files, or of ``.npy`` files for a model with one input,
3. ``"module:function"`` or ``"path/to/file.py:function"``: the function is imported (the
   current folder on ``sys.path``) and called with no arguments; it returns an iterable of feeds
   (or one feed). It is called again for every pass, so generators work,
4. an in-memory iterable of feeds (a list, a generator) or a single feed dict,
5. a ``FeedSource`` (returned as is).

A feed is ``dict[input name, np.ndarray]``. Files are checked up front, streaming (open, check,
close: the data is never held all at once): names, dtypes, ranks, fixed dims and NaN/Inf. In-memory
sequences are checked up front too (and suspicious data, all zeros, constant or above 1e15, gets a
warning: ``data_warnings``); feeds from a generator are checked one by one as they come,
before each is used. float data for a float input of another width is cast silently; int vs float
is an error. Symbolic dims accept any size, and sizes may differ from feed to feed.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from edgeq.calibrate.data_warnings import DataStats
from edgeq.errors import DataError, EdgeqError, UsageError
from edgeq.files import regular_file
from edgeq.runtime.feeds import TensorSpec, symbolic_dim

__all__ = ["FeedSource", "load_data", "model_input_specs", "validate_feed"]

logger = logging.getLogger(__name__)


def model_input_specs(model: Any) -> list[TensorSpec]:
    """Inputs a feed must give: graph inputs that are not initializers (ModelProto, onnx_ir
    Model or path)."""
    import onnx_ir as ir

    if isinstance(model, (str, os.PathLike)):
        from edgeq.io import load_model

        model = load_model(model)
    elif not isinstance(model, ir.Model):
        if not hasattr(model, "graph"):
            raise UsageError(f"expected an ONNX model (path, onnx.ModelProto or onnx_ir.Model), got {type(model).__name__}")
        model = ir.from_proto(model)
    specs = []
    for value in model.graph.inputs:
        if value.name in model.graph.initializers:
            continue
        dtype = None
        if value.dtype is not None:
            try:
                dtype = np.dtype(value.dtype.numpy()).name
            except Exception:  # string or exotic types
                dtype = None
        shape = None
        if value.shape is not None:  # -1, 0 and "?" are exporters' "unknown" (Paddle, older TensorFlow)
            shape = tuple((d if d > 0 else None) if isinstance(d, int) else symbolic_dim(d.value) for d in value.shape.dims)
        specs.append(TensorSpec(value.name, dtype, shape))
    return specs


def _fmt_shape(shape: Sequence[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _convert(name: str, value: Any, spec: TensorSpec, where: str) -> np.ndarray:
    try:
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
    except Exception as e:
        raise DataError(f"input {name!r} in {where} is not an array ({type(e).__name__}): give numeric arrays") from None
    if array.dtype.kind in "OSUV":
        raise DataError(f"input {name!r} in {where} holds {array.dtype} values, not numbers: give numeric arrays")
    if spec.dtype is None or spec.dtype == "object":
        return array
    want = np.dtype(spec.dtype)
    if array.dtype == want:
        return array
    got = array.dtype
    if want.kind == "f" and got.kind == "f":
        return array.astype(want)  # float64 -> float32 and friends: friendly and safe for calibration
    if want.kind in "iu" and got.kind in "iu" and array.size:
        info = np.iinfo(want)
        if info.min <= array.min() and array.max() <= info.max:
            return array.astype(want)
    elif want.kind in "iu" and got.kind in "iu":
        return array.astype(want)
    hint = f"array.astype(np.{want.name})" if not (want.kind in "iub") == (got.kind in "iub") else "the right dtype"
    raise DataError(
        f"input {name!r} in {where} must be {want.name}, got {got.name}: save it as {hint}"
    )


def _empty_state(array: np.ndarray, spec: Any) -> bool:
    """An empty input that is a state, not missing data: every zero-length axis is a dynamic one
    past the first (a decoder's KV cache before the first token: (layers, batch, heads, 0, dim))."""
    shape = spec.shape or ()
    zeros = [axis for axis, n in enumerate(array.shape) if n == 0]
    return bool(zeros) and len(shape) == array.ndim and all(
        axis > 1 and not isinstance(shape[axis], int) for axis in zeros)


def validate_feed(feed: Any, specs: Sequence[TensorSpec], where: str) -> dict[str, np.ndarray]:
    """Check one feed against the model inputs; return it with floats cast to the input dtype.

    DataError (naming ``where`` and the input) for unknown or missing names, int vs float,
    rank or fixed-dim mismatch, one symbolic dim given two sizes, and NaN/Inf values.
    """
    if not isinstance(feed, Mapping):
        raise DataError(f"{where} is a {type(feed).__name__}, not a dict of input name -> array")
    expected = [s.name for s in specs]
    names = ", ".join(map(repr, expected))
    if len(specs) == 1 and list(feed) == ["arr_0"] and "arr_0" not in expected:
        feed = {expected[0]: feed["arr_0"]}  # np.savez(path, array) for a one-input model
    unknown = [k for k in feed if k not in expected]
    if unknown:
        raise DataError(f"{where} has unknown input(s) {', '.join(map(repr, unknown))}: the model expects {names}")
    missing = [k for k in expected if k not in feed]
    if missing:
        raise DataError(f"{where} lacks model input(s) {', '.join(map(repr, missing))}: the model expects {names}")
    out: dict[str, np.ndarray] = {}
    symbols: dict[str, tuple[int, str]] = {}
    for spec in specs:
        array = _convert(spec.name, feed[spec.name], spec, where)
        if spec.shape is not None:
            if array.ndim != len(spec.shape):
                hint = " (add the batch dim with x[None])" if array.ndim + 1 == len(spec.shape) else ""
                raise DataError(
                    f"input {spec.name!r} in {where} has rank {array.ndim} (shape {list(array.shape)}) but the "
                    f"model expects rank {len(spec.shape)} (shape {_fmt_shape(spec.shape)}){hint}"
                )
            for axis, (want, got) in enumerate(zip(spec.shape, array.shape)):
                if isinstance(want, int) and want != got:
                    raise DataError(
                        f"input {spec.name!r} in {where} has shape {list(array.shape)} but the model expects "
                        f"{_fmt_shape(spec.shape)}: dim {axis} must be {want}, not {got}"
                    )
                if isinstance(want, str):
                    first = symbols.setdefault(want, (got, spec.name))
                    if first[0] != got:
                        raise DataError(
                            f"dim {want!r} is {first[0]} in input {first[1]!r} but {got} in input "
                            f"{spec.name!r} of {where}: give them the same size"
                        )
        if array.dtype.kind in "fc" and array.size == 0 and not _empty_state(array, spec):
            raise DataError(f"input {spec.name!r} in {where} is empty (shape {list(array.shape)}): no range can be "
                            "computed from it; give at least one sample")
        if array.dtype.kind in "fc" and array.size and not np.isfinite(array).all():
            bad = "NaN" if np.isnan(array).any() else "Inf"
            raise DataError(f"input {spec.name!r} in {where} holds {bad} values: clean the data before calibrating")
        out[spec.name] = array
    return out


# -- files -------------------------------------------------------------------------------------


def _list_files(path: str) -> list[str]:
    if not os.path.exists(path):
        raise DataError(f"calibration data {path} does not exist: give an .npz file, a folder of .npz/.npy files or module:function")
    if os.path.isdir(path):
        entries = sorted(f for f in os.listdir(path) if not f.startswith("."))
        npz = [os.path.join(path, f) for f in entries if f.endswith(".npz")]
        npy = [os.path.join(path, f) for f in entries if f.endswith(".npy")]
        if npz and npy:
            raise DataError(f"calibration folder {path} mixes .npz and .npy files: keep one kind")
        if not (npz or npy):
            raise DataError(f"calibration folder {path} holds no .npz or .npy files: save one feed per file with np.savez")
        return [regular_file(file, "calibration file", error=DataError) for file in npz or npy]
    if not path.endswith((".npz", ".npy")):
        raise DataError(f"calibration data {path} must be an .npz file (keys = input names) or a folder of them")
    return [regular_file(path, "calibration file", error=DataError)]


def _read_file(path: str, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    try:
        if path.endswith(".npy"):
            if len(specs) != 1:
                raise DataError(
                    f"{path} is a .npy file, which only fits a model with one input; this model has "
                    f"{len(specs)} ({', '.join(repr(s.name) for s in specs)}): use .npz files keyed by input name"
                )
            return {specs[0].name: np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise DataError(f"{path} is not an .npz archive: save feeds with np.savez(path, name=array)")
            feed = {key: data[key] for key in data.files}
    except DataError:
        raise
    except ValueError as e:
        msg = str(e).splitlines()[0] if str(e) else "unreadable"
        if "pickle" in msg.lower() or "object" in msg.lower():
            msg = "it holds Python objects (pickled), which edgeq never loads"
        raise DataError(f"cannot read calibration file {path}: {msg}; save plain numeric arrays with np.savez") from None
    except Exception as e:  # OSError, EOFError, zipfile.BadZipFile ...
        detail = str(e).splitlines()[0] if str(e) else ""
        raise DataError(
            f"cannot read calibration file {path} ({type(e).__name__}{': ' + detail if detail else ''}): "
            "it may be truncated; re-create it with np.savez"
        ) from None
    if not feed:
        raise DataError(f"calibration file {path} holds no arrays: save one array per model input")
    return feed


# -- callables ---------------------------------------------------------------------------------


def _import_function(spec: str) -> Callable[[], Any]:
    target, _, attr = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            if not os.path.isfile(target):
                raise UsageError(f"calibration data {spec}: file {target} does not exist")
            name = "edgeq_calib_" + os.path.splitext(os.path.basename(target))[0]
            module_spec = importlib.util.spec_from_file_location(name, target)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            cwd = os.getcwd()
            if cwd not in sys.path:
                sys.path.insert(0, cwd)
            module = importlib.import_module(target)
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"cannot import {target!r} for calibration data {spec} ({type(e).__name__}: {e})") from None
    function = getattr(module, attr, None)
    if function is None or not callable(function):
        raise UsageError(f"{target!r} has no function {attr!r} (calibration data {spec}): check the name")
    return function


def _looks_like_function(spec: str) -> bool:
    target, sep, attr = spec.rpartition(":")
    if not sep or not attr.isidentifier() or os.path.exists(spec):
        return False
    return target.endswith(".py") or all(part.isidentifier() for part in target.split("."))


# -- the source --------------------------------------------------------------------------------


class FeedSource:
    """A re-iterable stream of validated feeds. ``iter()`` yields ``dict[str, np.ndarray]``;
    ``items()`` yields ``(label, feed)`` where the label names the file or feed for messages.
    ``len()`` works when the number of feeds is known (files, sequences)."""

    def __init__(
        self,
        open_items: Callable[[], Iterator[tuple[str, Any]]],
        specs: Sequence[TensorSpec],
        description: str,
        *,
        num_feeds: int | None = None,
        one_shot: bool = False,
    ) -> None:
        self._open = open_items
        self.specs = tuple(specs)
        self.description = description
        self.num_feeds = num_feeds
        self._one_shot = one_shot
        self._used = False

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.specs]

    def __len__(self) -> int:
        if self.num_feeds is None:
            raise TypeError(f"the number of feeds in {self.description} is not known in advance")
        return self.num_feeds

    def __repr__(self) -> str:
        return f"FeedSource({self.description}, feeds={self.num_feeds if self.num_feeds is not None else '?'})"

    def items(self) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        if self._one_shot and self._used:
            raise UsageError(
                f"{self.description} is a one-shot iterator and was already consumed: pass a list "
                "or a function (module:function) that returns a fresh iterable"
            )
        self._used = True
        count = 0
        for label, feed in self._open():
            count += 1
            yield label, validate_feed(feed, self.specs, label)
        if count == 0:
            raise DataError(f"{self.description} yielded no feeds: give at least one sample")

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for _, feed in self.items():
            yield feed


def _file_source(path: str, specs: Sequence[TensorSpec]) -> FeedSource:
    files = _list_files(path)
    stats = DataStats()
    for file in files:  # stream: open, check, close; nothing is kept but a few numbers per input
        stats.add(validate_feed(_read_file(file, specs), specs, file), file)
    stats.report(f"calibration data {path}")

    def open_items() -> Iterator[tuple[str, Any]]:
        for file in files:
            yield file, _read_file(file, specs)

    return FeedSource(open_items, specs, f"calibration data {path}", num_feeds=len(files))


def _iterable_source(make: Callable[[], Any], specs: Sequence[TensorSpec], description: str, *, reusable: bool) -> FeedSource:
    def as_iterable(result: Any) -> Iterable[Any]:
        if isinstance(result, Mapping):
            return [result]
        if isinstance(result, (str, bytes)) or not isinstance(result, Iterable):
            raise UsageError(f"{description} returned a {type(result).__name__}, not an iterable of feed dicts")
        return result

    first = as_iterable(make())
    num_feeds = None
    if isinstance(first, Sequence):
        if not first:
            raise DataError(f"{description} holds no feeds: give at least one sample")
        stats = DataStats()
        for i, feed in enumerate(first):  # already in memory: check all now
            stats.add(validate_feed(feed, specs, f"feed #{i} of {description}"), f"feed #{i}")
        stats.report(description)
        num_feeds = len(first)
    pending = [first]

    def open_items() -> Iterator[tuple[str, Any]]:
        iterator = iter(pending.pop() if pending else as_iterable(make()))
        for i in itertools.count():
            try:
                feed = next(iterator)
            except StopIteration:
                return
            except EdgeqError:
                raise
            except Exception as e:
                raise UsageError(f"{description} failed at feed #{i} ({type(e).__name__}: {e})") from None
            yield f"feed #{i} of {description}", feed

    one_shot = not reusable and not isinstance(first, Sequence)
    return FeedSource(open_items, specs, description, num_feeds=num_feeds, one_shot=one_shot)


def load_data(spec: Any, model: Any) -> FeedSource:
    """Build a validated, re-iterable ``FeedSource`` from ``spec`` for ``model``'s inputs.

    ``spec``: .npz file | folder of .npz (or .npy for one-input models) | ``"module:function"`` |
    an iterable of feed dicts | one feed dict | a FeedSource. ``model``: onnx_ir.Model,
    onnx.ModelProto or path. Raises DataError (bad data) or UsageError (bad spec).
    """
    if isinstance(spec, FeedSource):
        return spec
    specs = model_input_specs(model)
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and not _looks_like_function(spec)):
        return _file_source(os.fspath(spec), specs)
    if isinstance(spec, str):
        function = _import_function(spec)

        def call() -> Any:
            try:
                return function()
            except Exception as e:
                raise UsageError(f"calibration data function {spec} failed ({type(e).__name__}: {e})") from None

        return _iterable_source(call, specs, spec, reusable=True)
    if isinstance(spec, Mapping):
        spec = [spec]
    if isinstance(spec, (bytes, bytearray)) or not isinstance(spec, Iterable):
        raise UsageError(
            f"calibration data must be a path, 'module:function' or an iterable of feed dicts, not {type(spec).__name__}"
        )
    return _iterable_source(lambda: spec, specs, "the calibration feeds", reusable=not isinstance(spec, Iterator))
