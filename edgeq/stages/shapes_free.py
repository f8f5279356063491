"""Whether a model's intermediate shapes can be dropped without changing what onnxruntime runs.

    free = shapes_are_free(model)     # then DropShapesPass()(model) changes no operator

``passes/drop_shapes.py`` drops ``value_info`` to make small files smaller (a tenth of a small
CNN's). onnxruntime infers most shapes again when a session loads, but not all: on MiniLM's
int8 answer it fused 12 SkipLayerNormalization nodes with them and none without, and the outputs
moved by 1e-3. Not a question of speed (on the development CPU the unfused graph ran 6-16%
faster, MiniLM int8 and fp32 alike; another CPU may differ): a file should run what was timed and
judged. So the shapes go only where onnxruntime's optimized graph (CPU, all optimizations) has the
same operators without them: auto's size target (``auto/size_fit.py``) then changes how weights
are stored and nothing else, and compress mode runs the prepared model's operators.
"""

from __future__ import annotations

import collections
import os
import tempfile
from typing import Any

__all__ = ["shapes_are_free"]


def _optimized_ops(model: Any, folder: str, name: str) -> collections.Counter:
    import onnx
    import onnxruntime as ort

    from edgeq.io import model_bytes

    options = ort.SessionOptions()
    options.optimized_model_filepath = os.path.join(folder, name)
    options.intra_op_num_threads = 1
    options.log_severity_level = 4
    ort.InferenceSession(model_bytes(model), options, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath, load_external_data=False).graph.node)


def shapes_are_free(model: Any) -> bool:
    """The operators onnxruntime runs are the same with and without ``model``'s intermediate
    shapes (``model`` is not changed); False where it cannot load it."""
    from edgeq.graph import copy_model
    from edgeq.passes.drop_shapes import DropShapesPass

    dropped = copy_model(model)
    DropShapesPass()(dropped)
    with tempfile.TemporaryDirectory() as folder:
        try:
            return _optimized_ops(model, folder, "with.onnx") == _optimized_ops(dropped, folder, "without.onnx")
        except Exception:  # noqa: BLE001 - a model onnxruntime cannot load keeps what it has
            return False
