"""Loading and saving ONNX models safely.

* Loading checks that the file exists, parses, and that every external-data path stays inside
  the model's folder. Weights in external data are read lazily (models over 2 GB stay on disk).
* Saving is atomic (a temporary file in the destination folder, then a rename), refuses to write
  over any of the inputs, and moves weights to external data beside the model when they exceed
  protobuf's 2 GB (or when asked); below that, weights read from external data are written
  into the model file. Either way the written model loads from any working directory.
  Writers of one folder take turns for a model's two renames (weights, then model), so that
  concurrent saves to one path leave one whole model, never one's graph with another's weights.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from edgeq.errors import EdgeqError, ModelLoadError, UnsupportedError, UsageError
from edgeq.files import check_external_location, check_model_file, same_file

if TYPE_CHECKING:
    import onnx
    import onnx_ir as ir

__all__ = [
    "load_model",
    "inlined",
    "as_model",
    "given_bytes",
    "save_model",
    "check_output_path",
    "check_outputs",
    "check_model_path",
    "input_files",
    "atomic_path",
    "model_bytes",
    "weights_nbytes",
    "EXTERNAL_DATA_THRESHOLD",
]

logger = logging.getLogger(__name__)

# Protobuf cannot serialize a message over 2 GiB; leave room for the graph itself.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def _check_declared_sizes(model: ir.Model, path: str) -> None:
    """Every initializer stored in the file holds the bytes its shape declares (checked before
    anything allocates them: a declared 2**40 dimension is refused, not attempted)."""
    import onnx_ir as ir

    from edgeq.graph import graphs_of

    for graph in graphs_of(model):
        for value in graph.initializers.values():
            tensor = value.const_value
            if not isinstance(tensor, ir.TensorProtoTensor):
                continue
            proto = tensor.raw
            fields = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")
            try:
                declared = tensor.nbytes
            except Exception:  # an exotic or unknown dtype: onnxruntime's load says more
                continue
            if proto.HasField("raw_data"):
                held = len(proto.raw_data)
            elif any(len(getattr(proto, f)) for f in fields):
                continue  # typed fields: onnx's checker counts them
            else:
                held = 0
            if held < declared:
                raise ModelLoadError(
                    f"initializer {value.name!r} in {path} declares shape {list(tensor.shape.numpy())} "
                    f"({declared:,} bytes) but holds {held:,} bytes: the model is truncated or corrupt; re-export it"
                )


def _check_external_paths(model: ir.Model, base_dir: str) -> None:
    import onnx_ir as ir

    from edgeq.graph import graphs_of

    for graph in graphs_of(model):
        for value in graph.initializers.values():
            tensor = value.const_value
            if isinstance(tensor, ir.ExternalTensor):
                length = tensor.length if tensor.length is not None else tensor.nbytes
                check_external_location(tensor.location, tensor.base_dir or base_dir, value.name,
                                        offset=tensor.offset or 0, length=length)


def _map_values(proto: onnx.ModelProto) -> list[str]:
    """Names of the main graph's inputs, outputs and values whose type holds a map."""
    def has_map(t: Any) -> bool:
        kind = t.WhichOneof("value")
        if kind == "map_type":
            return True
        inner = {"sequence_type": "elem_type", "optional_type": "elem_type"}.get(kind)
        return inner is not None and has_map(getattr(getattr(t, kind), inner))

    g = proto.graph
    return [v.name for v in (*g.input, *g.output, *g.value_info) if has_map(v.type)]


def _refuse_unreadable_types(error: BaseException, label: str, proto: onnx.ModelProto | None = None) -> None:
    """Where onnx_ir could not read a type (a map: skl2onnx's ZipMap outputs), an
    UnsupportedError (exit 1) naming the values and the fix instead of "truncated or corrupt"."""
    import onnx

    cause = error
    while cause.__cause__ is not None and not isinstance(cause, NotImplementedError):
        cause = cause.__cause__
    if not isinstance(cause, NotImplementedError):
        return
    names: list[str] = []
    try:
        names = _map_values(proto if proto is not None else onnx.load(label, load_external_data=False))
    except Exception:  # noqa: BLE001 - the names only make the message better
        pass
    where = f" ({', '.join(map(repr, names))})" if names else ""
    raise UnsupportedError(
        f"{label} has values of a type edgeq cannot read{where}: {str(cause).splitlines()[0]} This is "
        "typically a ZipMap output (skl2onnx classifiers): re-export without it, e.g. "
        "to_onnx(model, X, options={'zipmap': False})") from None


def load_model(path: str | os.PathLike) -> ir.Model:
    """Load an ONNX file as an ``onnx_ir.Model``; external data is checked and read lazily."""
    import onnx_ir as ir

    path = os.fspath(path)
    check_model_file(path)
    try:
        model = ir.load(path)
    except Exception as e:  # protobuf raises DecodeError / RuntimeWarning-ish errors
        _refuse_unreadable_types(e, path)
        raise ModelLoadError(
            f"model file {path} is not a valid ONNX model ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'parse error'}): it may be truncated or "
            "corrupt; re-export it"
        ) from None
    if model.graph is None or (len(model.graph) == 0 and len(model.graph.outputs) == 0):
        raise ModelLoadError(f"model file {path} holds no graph: it may be truncated; re-export it")
    _check_external_paths(model, os.path.dirname(os.path.abspath(path)))
    _check_declared_sizes(model, path)
    return model


def given_bytes(model: ir.Model | onnx.ModelProto, path: str | None) -> int:
    """The size of the model as the user gave it: its file's, or serialized where it came in memory
    (what ``--max-size Nx`` divides)."""
    if isinstance(path, str) and os.path.isfile(path):
        return os.path.getsize(path)
    return len(model_bytes(model))


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
        try:
            return ir.from_proto(model), None
        except Exception as e:
            _refuse_unreadable_types(e, "the model", model)
            raise
    if isinstance(model, ir.Model):
        return (copy_model(model) if copy else model), None
    raise UsageError(f"model must be a path, onnx.ModelProto or onnx_ir.Model, not {type(model).__name__}")


@functools.lru_cache(maxsize=16)
def _external_refs(path: str, size: int, mtime_ns: int) -> tuple[tuple[str, str, int, int | None], ...]:
    """(tensor, location, offset, length) of every external tensor an ONNX file names, read
    without its weights; cached by the file's size and time."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    proto = onnx.load(path, load_external_data=False)
    refs = []
    for tensor in _get_all_tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            length = info.get("length")
            refs.append((tensor.name, info.get("location", ""), int(info.get("offset") or 0),
                         int(length) if length else None))
    return tuple(refs)


def _refs(path: str) -> tuple[tuple[str, str, int, int | None], ...]:
    stat = os.stat(path)
    return _external_refs(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


def check_model_path(path: str | os.PathLike) -> str:
    """A model file onnxruntime may open by path: a regular, non-empty file whose external data
    stays inside its folder, within the data files' sizes (ModelLoadError otherwise)."""
    path = check_model_file(path)
    try:
        refs = _refs(path)
    except Exception:  # not parseable here: onnxruntime's load gives the reason
        return path
    folder = os.path.dirname(os.path.abspath(path))
    for name, location, offset, length in refs:
        check_external_location(location, folder, name, offset=offset, length=length)
    return path


def _model_data_files(path: str) -> list[str]:
    """The external-data files an ONNX file names (inside its folder)."""
    try:
        folder = os.path.dirname(os.path.abspath(path))
        return [os.path.join(folder, loc) for _, loc, _, _ in _refs(path) if loc and "\0" not in loc]
    except Exception:  # not a readable model: its own load says why, later
        return []


def input_files(inputs: Iterable[str | os.PathLike | None]) -> list[str]:
    """Every file behind ``inputs``: a folder's files, a model's external-data files, the rest
    as given (missing ones skipped)."""
    files: list[str] = []
    for src in inputs:
        if src is None or not isinstance(src, (str, os.PathLike)):
            continue
        src = os.fspath(src)
        if os.path.isdir(src):
            files += [os.path.join(src, name) for name in sorted(os.listdir(src))
                      if os.path.isfile(os.path.join(src, name))]
        elif os.path.exists(src):
            files.append(src)
            if src.endswith(".onnx") and os.path.isfile(src):
                files += _model_data_files(src)
    return files


def check_output_path(out: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> str:
    """Refuse to write over an input (a folder's files, a model's external data and hard links
    included); make sure the destination is not a folder."""
    out = os.fspath(out)
    for src in input_files(inputs):
        if same_file(src, out):
            raise UsageError(
                f"output {out} is the same file as input {src}: choose another output path "
                "(edgeq never writes over its inputs)"
            )
    if os.path.isdir(out):
        raise UsageError(f"output {out} is a folder: give a file path such as {out}/model.onnx")
    return out


def check_outputs(outputs: Iterable[str | os.PathLike | None], inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Before any work: no output is an input (see ``check_output_path``) and no two outputs are
    one file (``-o`` and ``--report``'s Markdown sibling, say)."""
    outputs = [os.fspath(o) for o in outputs if o is not None]
    inputs = list(inputs)
    for i, out in enumerate(outputs):
        check_output_path(out, inputs)
        for other in outputs[:i]:
            if same_file(out, other):
                raise UsageError(f"outputs {other} and {out} are the same file: give them different paths")


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


@contextlib.contextmanager
def _folder_lock(folder: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` itself (no lock file to leave behind), across
    threads and processes; unguarded where the platform or file system has no such lock."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    fd = None
    try:
        fd = os.open(folder, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as e:  # a folder we may write but not read, a file system without locks
        logger.debug("no lock on %s (%s): concurrent saves there may interleave", folder, e)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def weights_nbytes(model: ir.Model) -> int:
    """Bytes held by the initializers of ``model``'s graph and all its subgraphs."""
    from edgeq.graph import graphs_of
    total = 0
    for graph in graphs_of(model):
        for value in graph.initializers.values():
            if value.const_value is not None:
                total += value.const_value.nbytes
    return total


@contextlib.contextmanager
def inlined(model: ir.Model) -> Iterator[None]:
    """Hold every tensor on disk in memory for the block (it is written into the protobuf),
    then give the model its external tensors back."""
    import onnx_ir as ir

    from edgeq.graph import graphs_of

    saved = [(value, value.const_value) for graph in graphs_of(model) for value in graph.initializers.values()
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

    from edgeq.graph import graphs_of

    return {os.path.realpath(os.path.join(value.const_value.base_dir or "", value.const_value.location))
            for graph in graphs_of(model) for value in graph.initializers.values()
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
            with _folder_lock(folder):  # the pair renamed by one writer at a time
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
