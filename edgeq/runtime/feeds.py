"""Feeds: input specs from onnxruntime metadata, checks before a run, feed files, random feeds.

A feed is ``dict[input name, np.ndarray]``. ``check_feeds`` catches what onnxruntime would report
as a C++ error deep in a graph: unknown or missing names, wrong dtypes, ranks and fixed dims,
and one symbolic dim given two sizes in one feed. It never casts: a wrong dtype is an error that
says how to fix it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from edgeq.errors import DataError, InputError, UsageError
from edgeq.files import regular_file

__all__ = [
    "TensorSpec",
    "ORT_DTYPES",
    "spec_from_node_arg",
    "symbolic_dim",
    "check_feeds",
    "iter_feeds",
    "load_feeds",
    "random_feeds",
    "concrete_shape",
]

# onnxruntime type strings -> numpy dtype names
ORT_DTYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(uint32)": "uint32",
    "tensor(int64)": "int64",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}

Dim = int | str | None

# dim_param names exporters write for "unknown", not for a size shared between dims: Paddle2ONNX
# writes "?" for both the height and the width of an image input, which onnxruntime lets differ.
PLACEHOLDER_DIMS = frozenset({"?", "-1", "None", "none", "unk", "unknown", "dynamic"})


def symbolic_dim(name: str | None) -> str | None:
    """A dim_param as a spec holds it: its name, or None when it only means "unknown"."""
    return None if not name or name in PLACEHOLDER_DIMS else name


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A model input or output: numpy dtype name (None if not a tensor) and shape.

    Symbolic dims are their name (``"batch"``) or None when unnamed.
    """

    name: str
    dtype: str | None
    shape: tuple[Dim, ...] | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": None if self.shape is None else list(self.shape)}


def spec_from_node_arg(arg: Any) -> TensorSpec:
    shape = arg.shape
    if shape is not None:
        shape = tuple(d if isinstance(d, int) and d >= 0 else (symbolic_dim(d) if isinstance(d, str) else None)
                      for d in shape)
    return TensorSpec(arg.name, ORT_DTYPES.get(arg.type), shape)


def _fmt_shape(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def check_feeds(feeds: Mapping[str, Any], specs: Sequence[TensorSpec], where: str = "the model") -> dict[str, np.ndarray]:
    """Validate ``feeds`` against ``specs``; return them as numpy arrays (never cast)."""
    if not isinstance(feeds, Mapping):
        raise InputError(f"feeds must be a dict of input name -> array, got {type(feeds).__name__}")
    expected = [s.name for s in specs]
    unknown = [k for k in feeds if k not in expected]
    missing = [k for k in expected if k not in feeds]
    if unknown:
        raise InputError(
            f"unknown input name(s) {', '.join(map(repr, unknown))} for {where}: "
            f"it expects {', '.join(map(repr, expected))}"
        )
    if missing:
        raise InputError(
            f"missing input(s) {', '.join(map(repr, missing))} for {where}: "
            f"it expects {', '.join(map(repr, expected))}"
        )
    out: dict[str, np.ndarray] = {}
    symbols: dict[str, tuple[int, str]] = {}
    for spec in specs:
        value = feeds[spec.name]
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        if spec.dtype is not None and spec.dtype != "object" and array.dtype != np.dtype(spec.dtype):
            raise InputError(
                f"input {spec.name!r} of {where} must be {spec.dtype}, got {array.dtype}: "
                f"convert it with array.astype(np.{spec.dtype})"
            )
        if spec.shape is not None:
            if array.ndim != len(spec.shape):
                raise InputError(
                    f"input {spec.name!r} of {where} must have rank {len(spec.shape)} "
                    f"(shape {_fmt_shape(spec.shape)}), got rank {array.ndim} (shape {list(array.shape)})"
                )
            for axis, (want, got) in enumerate(zip(spec.shape, array.shape)):
                if isinstance(want, int) and want != got:
                    raise InputError(
                        f"input {spec.name!r} of {where} must have shape {_fmt_shape(spec.shape)}, got "
                        f"{list(array.shape)}: dim {axis} must be {want}, not {got}"
                    )
                if isinstance(want, str):
                    if want in symbols and symbols[want][0] != got:
                        size, first = symbols[want]
                        raise InputError(
                            f"dim {want!r} is {size} in input {first!r} but {got} in input "
                            f"{spec.name!r} of {where}: give them the same size"
                        )
                    symbols.setdefault(want, (got, spec.name))
        out[spec.name] = array
    return out


def _load_npz(path: str, input_names: Sequence[str] | None) -> dict[str, np.ndarray]:
    try:
        if path.endswith(".npy"):
            if not input_names or len(input_names) != 1:
                raise DataError(
                    f"{path} is a .npy file, which only fits a model with one input: use a .npz "
                    "whose keys are the input names"
                )
            return {input_names[0]: np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise DataError(f"{path} is not an .npz archive: save feeds with np.savez(path, name=array)")
            feed = {key: data[key] for key in data.files}
    except DataError:
        raise
    except ValueError as e:
        msg = str(e).splitlines()[0] if str(e) else "unreadable"
        if "pickle" in msg.lower():
            msg = "it holds Python objects (pickled), which edgeq never loads"
        raise DataError(f"cannot read feeds file {path}: {msg}: save plain numeric arrays with np.savez") from None
    except (OSError, EOFError, KeyError) as e:
        raise DataError(
            f"cannot read feeds file {path} ({type(e).__name__}): it may be truncated or not an .npz; "
            "re-create it with np.savez"
        ) from None
    except Exception as e:  # zipfile.BadZipFile and friends
        raise DataError(
            f"cannot read feeds file {path} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): "
            "re-create it with np.savez"
        ) from None
    if not feed:
        raise DataError(f"feeds file {path} holds no arrays: save one array per model input")
    return feed


def _feed_files(path: str) -> list[str]:
    if not os.path.exists(path):
        raise DataError(f"feeds path {path} does not exist: give an .npz file or a folder of them")
    if os.path.isdir(path):
        files = sorted(
            os.path.join(path, f) for f in os.listdir(path) if f.endswith((".npz", ".npy")) and not f.startswith(".")
        )
        if not files:
            raise DataError(f"feeds folder {path} holds no .npz or .npy files")
        return [regular_file(file, "feeds file", error=DataError) for file in files]
    if not path.endswith((".npz", ".npy")):
        raise DataError(f"feeds file {path} must be an .npz (keys = input names) or a folder of them")
    return [regular_file(path, "feeds file", error=DataError)]


def iter_feeds(path: str | os.PathLike, input_names: Sequence[str] | None = None) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """Yield ``(file, feed)`` one file at a time from an .npz file or a folder of them (sorted).

    ``.npy`` files are accepted for a model with one input when ``input_names`` is given.
    """
    for file in _feed_files(os.fspath(path)):
        yield file, _load_npz(file, input_names)


def load_feeds(path: str | os.PathLike, input_names: Sequence[str] | None = None) -> list[dict[str, np.ndarray]]:
    """All feeds of an .npz file or a folder of .npz files (sorted by name), pickles refused."""
    return [feed for _, feed in iter_feeds(path, input_names)]


def concrete_shape(
    spec: TensorSpec,
    batch: int | None = None,
    dims: Mapping[str, int] | None = None,
    shape: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """Shape to generate for ``spec``: an explicit ``shape`` wins (its first dim replaced by
    ``batch`` when the model's first dim is symbolic); else a symbolic first dim is ``batch``,
    named dims come from ``dims``, and any other symbolic dim is an error naming the fix."""
    dims = dict(dims or {})
    model_shape = spec.shape if spec.shape is not None else None
    if shape is not None:
        result = [int(d) for d in shape]
        if model_shape is not None:
            if len(result) != len(model_shape):
                raise UsageError(
                    f"--input-shape for {spec.name!r} has rank {len(result)} but the model expects "
                    f"{_fmt_shape(model_shape)}"
                )
            if batch is not None and result and not isinstance(model_shape[0], int):
                result[0] = batch
        return tuple(result)
    if model_shape is None:
        raise UsageError(f"input {spec.name!r} has no known shape: give it with --input-shape {spec.name}=1x3x224x224")
    result = []
    for axis, d in enumerate(model_shape):
        if isinstance(d, int):
            result.append(d)
        elif isinstance(d, str) and d in dims:
            result.append(int(dims[d]))
        elif axis == 0 and batch is not None:
            result.append(batch)
        else:
            label = repr(d) if d else f"dim {axis}"
            raise UsageError(
                f"input {spec.name!r} has symbolic {label} (shape {_fmt_shape(model_shape)}): give its "
                f"size with --input-shape {spec.name}=... or --dim NAME=SIZE"
            )
    return tuple(result)


def random_feeds(
    specs: Sequence[TensorSpec],
    batch: int | None = None,
    dims: Mapping[str, int] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Random inputs from specs: floats ~ N(0, 1), ints in [0, 100) (token ids), bools True."""
    rng = np.random.default_rng(seed)
    shapes = dict(shapes or {})
    unknown = [k for k in shapes if k not in {s.name for s in specs}]
    if unknown:
        raise UsageError(
            f"--input-shape names unknown input(s) {', '.join(map(repr, unknown))}: the model's "
            f"inputs are {', '.join(repr(s.name) for s in specs)}"
        )
    if batch is not None and specs and all(s.shape and isinstance(s.shape[0], int) for s in specs):
        fixed = specs[0].shape[0]
        if batch != fixed and specs[0].name not in shapes:
            raise UsageError(
                f"the model has a fixed batch of {fixed} (input {specs[0].name!r} is "
                f"{_fmt_shape(specs[0].shape)}): use batch {fixed} or re-export it with a dynamic batch dim"
            )
    feed: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = concrete_shape(spec, batch, dims, shapes.get(spec.name))
        dtype = np.dtype(spec.dtype or "float32")
        if dtype.kind == "f":
            feed[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feed[spec.name] = np.ones(shape, dtype=bool)
        elif dtype.kind in "iu":
            high = 100 if dtype.itemsize > 1 else (128 if dtype.kind == "i" else 256)
            feed[spec.name] = rng.integers(0, high, size=shape).astype(dtype)
        else:
            raise UsageError(f"input {spec.name!r} has dtype {spec.dtype}: edgeq cannot make random data for it; pass --inputs")
    return feed
