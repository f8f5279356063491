"""One measurement in a fresh process, so that its peak memory is its own: the parent sends a JSON
spec on stdin and reads a JSON result from the child's stdout; an EdgeqError in the child comes
back as ``{"error": {"type", "message"}}`` and is raised again in the parent as the same class.

    result = run_isolated("edgeq.runtime._bench_worker", spec, timeout, what="benchmark of m.onnx",
                          fix="use fewer --iters")      # parent
    sys.exit(serve(lambda spec: measure(**spec)))     # child (python -m that module)
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["run_isolated", "serve"]


def run_isolated(module: str, spec: dict[str, Any], timeout: float, *, what: str, fix: str) -> dict[str, Any]:
    """The result dict of ``python -m module`` given ``spec``; EdgeqError naming ``what`` when it
    times out (with ``fix``) or crashes, or the child's own EdgeqError."""
    from edgeq import errors
    from edgeq.errors import EdgeqError

    try:
        proc = subprocess.run([sys.executable, "-m", module], input=json.dumps(spec), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EdgeqError(f"{what} took over {timeout:.0f} s: {fix}") from None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeqError(f"{what} crashed (exit {proc.returncode}): {tail}")
    payload = json.loads(lines[-1])
    if "error" in payload:
        raise getattr(errors, payload["error"]["type"], EdgeqError)(payload["error"]["message"])
    return payload["result"]


def serve(measure: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """The child's side: the spec from stdin, ``measure(spec)``'s result (or its EdgeqError) to stdout."""
    from edgeq.errors import EdgeqError

    spec = json.loads(sys.stdin.read())
    try:
        result = measure(spec)
    except EdgeqError as e:
        print(json.dumps({"error": {"type": type(e).__name__, "message": str(e)}}))
        return 1
    print(json.dumps({"result": result}))
    return 0
