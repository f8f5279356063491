"""Runs one benchmark configuration in a fresh process: JSON spec on stdin, JSON result on stdout.

Errors come back as ``{"error": {"type": ..., "message": ...}}`` so the parent re-raises the same
EdgeqError subclass.
"""

from __future__ import annotations

import json
import sys

__all__ = ["main"]


def main() -> int:
    spec = json.loads(sys.stdin.read())
    from edgeq.errors import EdgeqError
    from edgeq.runtime.bench import measure

    model = spec.pop("model")
    provider = spec.pop("provider")
    threads = spec.pop("threads")
    batch = spec.pop("batch")
    try:
        result = measure(model, provider, threads, batch=batch, **spec)
    except EdgeqError as e:
        print(json.dumps({"error": {"type": type(e).__name__, "message": str(e)}}))
        return 1
    print(json.dumps({"result": result.to_dict()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
