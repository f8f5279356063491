"""Loading and saving ONNX models safely.

* Loading checks that the file exists, parses, and that every external-data path stays inside
  the model's folder. Weights in external data are read lazily (models over 2 GB stay on disk).
* Saving is atomic (a temporary file in the destination folder, then a rename), refuses to write
  over any of the inputs, and moves weights to external data beside the model when they exceed
  protobuf's 2 GB (or when asked); below that, weights read from external data are written
  into the model file. Either way the written model loads from any working directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from edgeq.errors import EdgeqError, ModelLoadError, UsageError

if TYPE_CHECKING:
    import onnx
    import onnx_ir as ir

__all__ = [
    "load_model",
    "inlined",
    "as_model",
    "save_model",
    "check_output_path",
    "atomic_path",
    "model_bytes",
    "weights_nbytes",
    "EXTERNAL_DATA_THRESHOLD",
]

logger = logging.getLogger(__name__)

# Protobuf cannot serialize a message over 2 GiB; leave room for the graph itself.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def _check_readable(path: str) -> None:
    if not os.path.exists(path):
        raise ModelLoadError(f"model file {path} does not exist: check the path")
    if os.path.isdir(path):
        raise ModelLoadError(f"{path} is a folder, not a model file: pass the .onnx file inside it")
    if os.path.getsize(path) == 0:
        raise ModelLoadError(f"model file {path} is empty: re-export or re-download it")


def _check_external_paths(model: ir.Model, base_dir: str) -> None:
    import onnx_ir as ir

    root = os.path.realpath(base_dir)
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if isinstance(tensor, ir.ExternalTensor):
                target = os.path.realpath(os.path.join(tensor.base_dir or base_dir, tensor.location))
                if os.path.commonpath([root, target]) != root:
                    raise ModelLoadError(
                        f"initializer {value.name!r} points to external data {tensor.location!r} "
                        f"outside the model's folder {base_dir}: refusing to read it; move the "
                        "data file beside the model"
                    )
                if not os.path.isfile(target):
                    raise ModelLoadError(
                        f"initializer {value.name!r} needs external data file {tensor.location!r}, "
                        f"which is missing from {base_dir}: copy it beside the model"
                    )


def load_model(path: str | os.PathLike) -> ir.Model:
    """Load an ONNX file as an ``onnx_ir.Model``; external data is checked and read lazily."""
    import onnx_ir as ir

    path = os.fspath(path)
    _check_readable(path)
    try:
        model = ir.load(path)
    except Exception as e:  # protobuf raises DecodeError / RuntimeWarning-ish errors
        raise ModelLoadError(
            f"model file {path} is not a valid ONNX model ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'parse error'}): it may be truncated or "
            "corrupt; re-export it"
        ) from None
    if model.graph is None or (len(model.graph) == 0 and len(model.graph.outputs) == 0):
        raise ModelLoadError(f"model file {path} holds no graph: it may be truncated; re-export it")
    _check_external_paths(model, os.path.dirname(os.path.abspath(path)))
    return model


def as_model(model: str | os.PathLike | onnx.ModelProto | ir.Model, *,
             copy: bool = True) -> tuple[ir.Model, str | None]:
    """``model`` (a path, onnx.ModelProto or onnx_ir.Model) as an onnx_ir.Model, and its path if
    it came from a file. With ``copy`` (for anything that will change it) the caller's
    onnx_ir.Model is copied, so it is never changed; without, a reader gets it as it is."""
    import onnx
    import onnx_ir as ir

    from edgeq.graph import copy_model

    if isinstance(model, (str, os.PathLike)):
        return load_model(model), os.fspath(model)
    if isinstance(model, onnx.ModelProto):
        return ir.from_proto(model), None
    if isinstance(model, ir.Model):
        return (copy_model(model) if copy else model), None
    raise UsageError(f"model must be a path, onnx.ModelProto or onnx_ir.Model, not {type(model).__name__}")


def check_output_path(out: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> str:
    """Refuse to write over an input; make sure the destination folder can be created."""
    out = os.fspath(out)
    real_out = os.path.realpath(out)
    for src in inputs:
        if src is None:
            continue
        src = os.fspath(src)
        if os.path.realpath(src) == real_out:
            raise UsageError(
                f"output {out} is the same file as input {src}: choose another output path "
                "(edgeq never writes over its inputs)"
            )
    if os.path.isdir(out):
        raise UsageError(f"output {out} is a folder: give a file path such as {out}/model.onnx")
    return out


@contextlib.contextmanager
def atomic_path(out: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> Iterator[str]:
    """Yield a temporary path in the destination's folder; rename it onto ``out`` on success."""
    out = check_output_path(out, inputs)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".edgeq-", suffix=os.path.basename(out), dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def weights_nbytes(model: ir.Model) -> int:
    """Bytes held by the initializers of ``model``'s graph and all its subgraphs."""
    total = 0
    for graph in model.graphs():
        for value in graph.initializers.values():
            if value.const_value is not None:
                total += value.const_value.nbytes
    return total


@contextlib.contextmanager
def inlined(model: ir.Model) -> Iterator[None]:
    """Hold every tensor on disk in memory for the block (it is written into the protobuf),
    then give the model its external tensors back."""
    import onnx_ir as ir

    saved = [(value, value.const_value) for graph in model.graphs() for value in graph.initializers.values()
             if isinstance(value.const_value, ir.ExternalTensor)]
    try:
        for value, tensor in saved:
            value.const_value = ir.Tensor(tensor.numpy(), dtype=tensor.dtype, name=value.name)
        yield
    finally:
        for value, tensor in saved:
            value.const_value = tensor


def _external_files(model: ir.Model) -> set[str]:
    """Real paths of the external-data files ``model``'s tensors read."""
    import onnx_ir as ir

    return {os.path.realpath(os.path.join(value.const_value.base_dir or "", value.const_value.location))
            for graph in model.graphs() for value in graph.initializers.values()
            if isinstance(value.const_value, ir.ExternalTensor)}


def save_model(
    model: ir.Model | onnx.ModelProto,
    path: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    external_data: bool | None = None,
) -> str:
    """Write ``model`` to ``path`` atomically, never over one of ``inputs``; the written model
    loads from any working directory.

    ``external_data``: weights go to ``<name>.data`` beside the model (True), or into the model
    file itself (False); ``None`` decides by size (external above protobuf's 2 GB limit). Weights
    the model reads from another model's external data are copied, never referenced.
    """
    import onnx_ir as ir

    if not isinstance(model, ir.Model):
        model = ir.from_proto(model)
    path = check_output_path(path, inputs)
    if external_data is None:
        external_data = weights_nbytes(model) > EXTERNAL_DATA_THRESHOLD
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    try:
        if not external_data:
            with atomic_path(path, inputs) as tmp, inlined(model):
                ir.save(model, tmp)
            return path
        data_name = name + ".data"
        data_path = os.path.join(folder, data_name)
        if os.path.realpath(data_path) in _external_files(model):
            raise UsageError(
                f"output {path} would write its weights over {data_name}, which the model reads its own "
                "weights from: choose another output name"
            )
        tmp_dir = tempfile.mkdtemp(prefix=".edgeq-", dir=folder)
        try:
            ir.save(model, os.path.join(tmp_dir, name), external_data=data_name)
            os.replace(os.path.join(tmp_dir, data_name), data_path)
            os.replace(os.path.join(tmp_dir, name), path)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        return path
    except OSError as e:
        raise EdgeqError(f"could not write model to {path} ({e}): check the folder and free space") from None


def model_bytes(model: ir.Model | onnx.ModelProto) -> bytes:
    """Serialize a (small) model for onnxruntime without touching the disk."""
    import onnx_ir as ir

    if isinstance(model, ir.Model):
        model = ir.to_proto(model)
    return model.SerializeToString()
